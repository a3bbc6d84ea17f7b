"""One local SparkSession for the whole test run (small shuffles, no UI)."""

import pytest

from jobs.spark import SparkSettings, build_session


@pytest.fixture(scope="session")
def spark():
    session = build_session(
        SparkSettings(app_name="segrec-tests", master="local[2]", shuffle_partitions=2, driver_memory="4g", quiet=True)
    )
    yield session
    session.stop()


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

    from jobs import ingest, synth

    root = tmp_path_factory.mktemp("synthetic")
    config = synth.SynthConfig(customers=1500, items=120, seed=5)
    synth.write(spark, synth.generate(spark, config), str(root / "raw"))
    ingest.run_ingest(spark, str(root / "raw" / "transactions"), str(root / "out"), ingest.IngestConfig())

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
