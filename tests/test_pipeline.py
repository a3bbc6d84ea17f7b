import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from jobs import pipeline
from runtime import cli
from tests import dirty_data

PROJECT = Path(__file__).resolve().parent.parent


def test_pipeline_prints_progress_and_writes_a_run_summary(spark, tmp_path, capsys):
    source = dirty_data.write_csv(tmp_path / "dirty.csv")
    status = cli.run(pipeline.main, ["--input", source, "--output", str(tmp_path / "out"), "--as-of", "2011-01-01", "--stages", "ingest"])
    out = capsys.readouterr().out

    assert status == 0
    assert "[1/1] ingest ..." in out
    assert "[1/1] ingest: 20 rows in, 5 out" in out
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["as_of"] == "2011-01-01"
    assert [stage["stage"] for stage in run["stages"]] == ["ingest"]
    assert run["stages"][0]["rows_in"] == 20


def test_unknown_stage_is_a_clear_error(spark, tmp_path, capsys):
    status = cli.run(pipeline.main, ["--input", "x.csv", "--output", str(tmp_path), "--stages", "ingest,sgement"])
    assert status == 2
    assert "unknown stage(s) sgement; stages are: ingest, segments, backtest, recommendations, report" in capsys.readouterr().err


def test_bad_as_of_date_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        pipeline.build_parser().parse_args(["--input", "a", "--output", "b", "--as-of", "09/09/2011"])
    assert "--as-of must be a date as YYYY-MM-DD, got '09/09/2011'" in capsys.readouterr().err


def test_command_line_failure_is_one_line_not_a_stack_trace(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    result = subprocess.run(
        [sys.executable, "-m", "jobs.pipeline", "--input", str(tmp_path / "missing.parquet"), "--output", str(tmp_path / "out"),
         "--master", "local[1]"],
        capture_output=True, text=True, cwd=PROJECT, env=env, timeout=300,
    )
    assert result.returncode == 2
    assert f"error: input {tmp_path / 'missing.parquet'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr and "at org.apache" not in result.stderr


@pytest.mark.parametrize("call, expected, java_frame", [
    # Converted by PySpark to a Python exception: its type is named.
    (lambda jvm: jvm.java.lang.Integer.parseInt("twelve"), 'NumberFormatException: For input string: "twelve"',
     "at java.base/java.lang.Integer.parseInt"),
    # A JVM error stays a py4j error: the Java one is named, not just the call.
    (lambda jvm: jvm.java.nio.ByteBuffer.allocate(2**31 - 1),
     "java.lang.OutOfMemoryError: Requested array size exceeds VM limit (in z:java.nio.ByteBuffer.allocate)",
     "at java.base/java.nio.ByteBuffer.allocate"),
])
def test_a_failure_in_the_jvm_is_one_line_that_names_the_java_exception_and_keeps_the_trace(spark, capsys, monkeypatch, tmp_path,
                                                                                             call, expected, java_frame):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def fail_in_the_jvm(argv):
        call(spark.sparkContext._jvm)

    assert cli.run(fail_in_the_jvm, []) == 1
    failure, where = capsys.readouterr().err.strip().splitlines()
    assert failure.startswith("error: Spark failed after ") and failure.endswith(f"s: {expected}")
    kept = Path(where.removeprefix("full trace: "))
    assert kept.parent == tmp_path and kept.name.startswith("segrec-failure-")
    trace = kept.read_text()
    assert "Traceback (most recent call last)" in trace and "in fail_in_the_jvm" in trace and java_frame in trace


def test_a_spark_error_class_alone_is_followed_by_its_message():
    # As Spark 4.3 reported an analyser bug (the Java exception's line names only the error class).
    raised = Exception("An error occurred while calling o4728.join.\n: org.apache.spark.SparkException: [INTERNAL_ERROR] \n"
                       "Failure when resolving conflicting references in Join:\n'Join LeftOuter\n")
    assert cli.spark_failure(raised) == ("org.apache.spark.SparkException: [INTERNAL_ERROR] Failure when resolving conflicting "
                                         "references in Join: (in o4728.join)")


def test_too_little_data_to_segment_is_one_clear_line(spark, tmp_path, capsys):
    source = dirty_data.write_csv(tmp_path / "dirty.csv")
    status = cli.run(pipeline.main, ["--input", source, "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()

    assert status == 2
    assert captured.err.strip() == ("error: CLV needs at least 20 customers with purchases before 2011-06-02, found 3 (segmenting as "
                                    "of the as-of date 2011-06-02 (the day after the last purchase; --as-of sets another))")
    assert "[1/5] ingest: 20 rows in" in captured.out  # the ingest output stays published
    assert (tmp_path / "out" / "ingest" / "clean").is_dir() and not (tmp_path / "out" / "segments").exists()


def test_shuffle_partitions_grow_with_the_input_and_never_shrink(spark, synthetic, session_settings):
    from runtime.spark import fit_to_input

    raw = str(synthetic.root / "raw" / "transactions")
    session_settings.keep("spark.sql.shuffle.partitions")
    before = spark.conf.get("spark.sql.shuffle.partitions")
    assert fit_to_input(spark, raw) == int(before)  # a small input keeps the configured number
    grown = fit_to_input(spark, raw, bytes_per_partition=10_000)
    assert grown > int(before) and spark.conf.get("spark.sql.shuffle.partitions") == str(grown)
    assert fit_to_input(spark, raw) == grown  # never lowered


def run_python(*argv: str, **env: str) -> subprocess.CompletedProcess:
    """This Python with ``argv`` in a process of its own (a JVM of its own, for session settings read at start-up), from the project."""
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=PROJECT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(PROJECT), **env})


def run_script(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run_python("-c", script, *args, **env)


def test_a_small_input_runs_in_one_partition_without_adaptive_execution_unless_they_were_set(spark, tmp_path):
    from runtime.spark import BYTES_PER_SHUFFLE_PARTITION, fit_to_input

    small, large = tmp_path / "small.parquet", tmp_path / "large.parquet"
    small.write_bytes(b"x" * 1000)
    with open(large, "wb") as part:
        part.truncate(2 * BYTES_PER_SHUFFLE_PARTITION + 1)  # more than one partition per core of local[2]
    fit_to_input(spark, str(small))
    assert spark.conf.get("spark.sql.adaptive.enabled") == "true"  # this session set both (conftest)
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    # Its own JVM: a session where nobody set it.
    show = (
        "import sys\n"
        "from runtime.spark import SparkSettings, build_session, fit_to_input\n"
        "spark = build_session(SparkSettings(quiet=True, master='local[2]'))\n"
        "for path in sys.argv[1:]:\n"
        "    fit_to_input(spark, path)\n"
        "    print(spark.conf.get('spark.sql.adaptive.enabled'), spark.conf.get('spark.sql.shuffle.partitions'))\n"
    )
    results = [run_script(show, *paths) for paths in ((str(small),), (str(large), str(small)))]
    assert all(result.returncode == 0 for result in results), [result.stderr for result in results]
    assert results[0].stdout.split() == ["false", "1"]  # the small input alone: off, and one partition
    # The large one: Spark's default, and one partition per 8 MB; the small one after it: off, but never fewer partitions.
    assert results[1].stdout.split() == ["true", "3", "false", "3"]


def test_a_stage_run_on_its_own_sizes_shuffle_partitions_to_the_ingests_output(spark, tmp_path, session_settings):
    from runtime.layout import fit_to_transactions
    from runtime.spark import BYTES_PER_SHUFFLE_PARTITION

    session_settings.keep("spark.sql.shuffle.partitions")
    before = spark.conf.get("spark.sql.shuffle.partitions")
    clean = tmp_path / "out" / "ingest" / "clean"
    clean.mkdir(parents=True)
    with open(clean / "part-00000.parquet", "wb") as part:
        part.truncate(5 * BYTES_PER_SHUFFLE_PARTITION + 1)
    fit_to_transactions(spark, str(tmp_path / "missing"))  # the stage itself reports a missing ingest
    assert spark.conf.get("spark.sql.shuffle.partitions") == before
    fit_to_transactions(spark, str(tmp_path / "out"))
    assert spark.conf.get("spark.sql.shuffle.partitions") == "6"


def test_a_local_session_runs_the_throughput_collector(spark):
    management = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    assert {bean.getName() for bean in management.getGarbageCollectorMXBeans()} == {"PS Scavenge", "PS MarkSweep"}


def test_the_settings_in_pyspark_submit_args_are_read_like_spark_submit_reads_them():
    from runtime.spark import submitted_settings

    args = ("--master 'local[2]' --driver-memory=1g --conf spark.sql.shuffle.partitions=3 -c spark.a=x=y "
            "--conf=spark.b=2 --py-files deps.zip --driver-java-options '-XX:+UseG1GC -Xss4m' --conf broken --conf pyspark-shell")
    assert submitted_settings(args) == {
        "spark.master": "local[2]", "spark.driver.memory": "1g", "spark.sql.shuffle.partitions": "3", "spark.a": "x=y",
        "spark.b": "2", "spark.driver.extraJavaOptions": "-XX:+UseG1GC -Xss4m",
    }
    assert submitted_settings("pyspark-shell") == {} and submitted_settings("") == {}


def test_a_local_session_keeps_what_pyspark_submit_args_then_the_config_file_set_over_its_own_defaults(tmp_path):
    # Its own JVM: PYSPARK_SUBMIT_ARGS is read when the JVM starts.
    show = (
        "from runtime.spark import SparkSettings, build_session\n"
        "extra = {'spark.sql.adaptive.enabled': 'true', 'spark.sql.session.timeZone': 'Europe/Paris'}\n"
        "spark = build_session(SparkSettings(quiet=True, extra=extra))\n"
        "print(spark.conf.get('spark.sql.shuffle.partitions'), spark.conf.get('spark.sql.adaptive.enabled'),"
        " spark.sparkContext.getCheckpointDir(), spark.sparkContext.getConf().get('spark.driver.memory'),"
        " spark.conf.get('spark.sql.session.timeZone'), spark.sparkContext.getConf().get('spark.buffer.pageSize'),"
        " spark.conf.get('spark.sql.codegen.cache.maxEntries'))\n"
    )
    submit_args = (f"--master local[3] --driver-memory 1g --conf spark.sql.adaptive.enabled=false "
                   f"--conf spark.checkpoint.dir={tmp_path} --conf spark.buffer.pageSize=2m pyspark-shell")
    result = run_script(show, PYSPARK_SUBMIT_ARGS=submit_args)
    assert result.returncode == 0, result.stderr
    partitions, adaptive, checkpoints, memory, zone, page_size, compiled_classes = result.stdout.split()
    assert (adaptive, memory, page_size) == ("false", "1g", "2m")  # over the config file's extra settings too
    assert compiled_classes == "10000"  # a default nobody overrode
    assert zone == "Europe/Paris"  # the config file's extra settings win over the defaults
    assert Path(checkpoints.removeprefix("file:")).parent == tmp_path
    assert partitions == "3"  # nobody set them: one per core of local[3]


def test_a_trained_jvm_cache_is_what_local_sessions_start_with(spark, tmp_path, monkeypatch):
    from runtime.java import jvm_cache_file

    monkeypatch.setenv("SEGREC_JVM_CACHE_DIR", str(tmp_path))
    cache = jvm_cache_file()  # for the Java this suite's session chose
    if cache is None:
        pytest.skip("the Java that runs Spark here cannot use an AOT cache (Java 25+ can)")
    train = ["-m", "devtools.jvm_cache", "--workload", "session"]
    trained = run_python(*train)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [Path(cache).name, Path(cache).name + ".log"]  # nothing partial left
    assert "JVM cache present" in run_python(*train).stdout

    # A JVM that cannot use its cache runs without it, unless told -XX:AOTMode=on: then it refuses to start.
    start = (
        "import os, shlex, sys\n"
        "from runtime.java import choose_java, local_java_options\n"
        "from runtime.spark import SparkSettings, build_session\n"
        "choose_java()\n"
        "if sys.argv[1:] == ['strict']:\n"
        "    strict = local_java_options() + ' -XX:AOTMode=on'\n"
        "    os.environ['PYSPARK_SUBMIT_ARGS'] = f'--driver-java-options {shlex.quote(strict)} pyspark-shell'\n"
        "spark = build_session(SparkSettings(quiet=True, master='local[1]'))\n"
        "arguments = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()\n"
        "print(spark.range(10).count(), *arguments)\n"
    )
    for mode in ("default", "strict"):
        started = run_script(start, mode)
        assert started.returncode == 0, started.stderr
        count, *arguments = started.stdout.split()
        assert count == "10" and f"-XX:AOTCache={cache}" in arguments
    assert "-XX:AOTMode=on" in arguments


def test_a_local_session_uses_8_mb_tungsten_pages_unless_told_otherwise(spark):
    # Spark's own choice here would be 64 MB (heap / cores / 16); the test above sets 2m and keeps it.
    assert spark.sparkContext.getConf().get("spark.buffer.pageSize") == "8m"


def test_a_local_session_checkpoints_into_a_directory_removed_when_the_process_exits(spark, tmp_path):
    assert Path(spark.sparkContext.getCheckpointDir().removeprefix("file:")).parent.name.startswith("segrec-checkpoints-")
    checkpoint = (
        "from pathlib import Path\n"
        "from runtime.spark import checkpoint_directory\n"
        "directory = Path(checkpoint_directory())\n"
        "(directory / 'app' / 'rdd-1').mkdir(parents=True)\n"
        "(directory / 'app' / 'rdd-1' / 'part-00000').write_bytes(b'factors')\n"
        "print(directory)\n"
    )
    result = run_script(checkpoint, TMPDIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).parent == tmp_path
    assert list(tmp_path.iterdir()) == []
