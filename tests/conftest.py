"""One local SparkSession for the whole test run (small shuffles, no UI)."""

from pathlib import Path

import pytest

from runtime.spark import SparkSettings, build_session


@pytest.fixture(scope="session")
def spark():
    # Adaptive execution set on, as large inputs run: the pipeline turns it off for small inputs only when nobody set it.
    session = build_session(SparkSettings(app_name="segrec-tests", master="local[2]", shuffle_partitions=2, driver_memory="4g", quiet=True,
                                          extra={"spark.sql.adaptive.enabled": "true"}))
    yield session
    session.stop()


@pytest.fixture
def session_settings(spark):
    """For one test: ``keep(key)`` puts that session setting back afterwards, whatever changes it; ``set(key, value)`` keeps it, then sets it."""

    class Settings:
        def __init__(self):
            self.kept = {}

        def keep(self, key):
            self.kept.setdefault(key, spark.conf.get(key))

        def set(self, key, value):
            self.keep(key)
            spark.conf.set(key, value)

    settings = Settings()
    yield settings
    for key, value in settings.kept.items():
        spark.conf.set(key, value)


@pytest.fixture(scope="module", autouse=True)
def release_cached_frames():
    """Each module's cached frames are dropped when it ends, so driver memory does not grow over the run."""
    yield
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.catalog.clearCache()


@pytest.fixture(scope="session")
def synthetic(spark, tmp_path_factory):
    """A small synthetic shop (planted tiers and affinities), generated and ingested once per run."""
    from dataclasses import dataclass

    from jobs import synth
    from runtime.stages.ingest import run_ingest
    from transactions.ingest import IngestConfig

    root = tmp_path_factory.mktemp("synthetic")
    config = synth.SynthConfig(customers=1500, items=120, seed=5)
    synth.write(spark, synth.generate(spark, config), str(root / "raw"))
    run_ingest(spark, str(root / "raw" / "transactions"), str(root / "out"), IngestConfig())

    @dataclass(frozen=True)
    class Synthetic:
        root: object
        config: object

        def place(self, name):
            return spark.read.parquet(str(root / "out" / "ingest" / name))

        def truth(self, name):
            import pandas as pd

            return pd.read_parquet(root / "raw" / "truth" / name)

    return Synthetic(root=root, config=config)


# The whole pipeline on the synthetic shop, kept short (the same profile `make cluster-test` uses).
PIPELINE_CONFIG = Path(__file__).resolve().parent.parent / "jobs" / "profiles" / "quick.toml"


@pytest.fixture(scope="session")
def train_settings() -> dict:
    from runtime.config import Settings, load_config_file

    return {"settings": Settings.resolve(load_config_file(str(PIPELINE_CONFIG)))}


@pytest.fixture(scope="session")
def pipeline_run(spark, synthetic, tmp_path_factory):
    """Every stage of ``jobs.pipeline`` on the synthetic shop's raw transactions; the output directory.

    What the command printed is kept beside it (see ``pipeline_printout``).
    """
    import contextlib
    import io

    from jobs import pipeline
    from runtime import cli

    output = tmp_path_factory.mktemp("pipeline") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.run(pipeline.main, ["--input", str(synthetic.root / "raw" / "transactions"), "--output", str(output),
                                         "--config", str(PIPELINE_CONFIG)])
    assert status == 0
    (output.parent / "printout.txt").write_text(printed.getvalue())
    return output


@pytest.fixture(scope="session")
def pipeline_printout(pipeline_run) -> str:
    """What ``jobs.pipeline`` printed while making ``pipeline_run``."""
    return (pipeline_run.parent / "printout.txt").read_text()


@pytest.fixture(scope="session")
def cluster_run(synthetic, tmp_path_factory):
    """The same pipeline on a standalone cluster, as a future: started in a background thread.

    Its JVMs (master, worker, driver, executor) run alongside the rest of the suite (see
    ``start_the_cluster_run_first``) instead of after it, taking what CPU the in-process tests
    leave between their Spark jobs (docs/deployment.md says what it costs the suite).
    """
    import socket
    from concurrent.futures import ThreadPoolExecutor

    from devtools import cluster_test

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    work = tmp_path_factory.mktemp("cluster-test")
    # The settings of the in-process run it is compared with, whose session set adaptive execution on (see ``spark``):
    # left unset, the cluster's driver would turn it off for this small input, and sums in another order shift the CLV fits.
    config = work / "pipeline.toml"
    config.write_text(PIPELINE_CONFIG.read_text() + '\n[spark.extra]\n"spark.sql.adaptive.enabled" = "true"\n')
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluster-run") as background:
        future = background.submit(cluster_test.run_on_cluster, str(synthetic.root / "raw" / "transactions"), work,
                                   config=str(config), port=port, echo=lambda line: None)
        yield future
        # Leaving the executor waits for the run, so no master or worker outlives the session.


def _uses_cluster_run(item) -> bool:
    return "cluster_run" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items):
    """Tests that read the cluster run go last, so the run has the whole suite to overlap."""
    items.sort(key=_uses_cluster_run)  # stable: every other test keeps its place


@pytest.fixture(scope="session", autouse=True)
def start_the_cluster_run_first(request):
    if any(_uses_cluster_run(item) for item in request.session.items):
        request.getfixturevalue("cluster_run")


@pytest.fixture(scope="session")
def trained(pipeline_run, synthetic):
    """The pipeline's recommendations: output dir, manifest, written tables (pandas), purchases."""
    import json

    import pandas as pd

    from runtime.layout import RECOMMENDATIONS

    stage = pipeline_run / RECOMMENDATIONS
    tables = {name: pd.read_parquet(stage / name) for name in ("recommendations", "trending", "similar_items")}
    manifest = json.loads((stage / "manifest.json").read_text())
    return pipeline_run, manifest, tables, synthetic.place("clean").toPandas()


@pytest.fixture
def app(tmp_path):
    """The web app on store_data's store (tests/webclient.py)."""
    from tests import webclient

    return webclient.make_app(tmp_path)


@pytest.fixture
def client(app):
    """An editor signed in, whose requests also carry an API key with every scope."""
    from tests import webclient

    return webclient.editor_with_key(app)
