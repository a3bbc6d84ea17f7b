"""The one place a SparkSession is built.

Local runs (``python -m jobs.…``) get defaults that suit one machine. Under
``spark-submit --master …``, or with ``PYSPARK_SUBMIT_ARGS`` for a local run,
everything the submitter set wins: our defaults are only applied to keys nobody
has set (``SparkConf.setIfMissing``).
"""

from __future__ import annotations

import atexit
import math
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

from runtime.java import choose_java, local_java_options

@dataclass(frozen=True)
class SparkSettings:
    """Defaults for a session; any key the submitter already set is left alone."""

    app_name: str = "segrec"
    master: str = "local[*]"
    shuffle_partitions: int | None = None  # the least (None: one per core); the pipeline raises it with the input's size
    driver_memory: str = "4g"
    quiet: bool = False  # no web UI and only errors logged (tests, benchmarks)
    extra: dict[str, str] = field(default_factory=dict)


BYTES_PER_SHUFFLE_PARTITION = 8 * 1024 ** 2  # of input files: about a million transaction rows as Parquet
ONE_PARTITION_BYTES = 16 * 1024 ** 2  # of input files: up to about two million rows run in one shuffle partition
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"


ADAPTIVE_EXECUTION = "spark.sql.adaptive.enabled"


def fit_to_input(spark, input_uri: str, bytes_per_partition: int = BYTES_PER_SHUFFLE_PARTITION) -> int:
    """Size the session to the input; returns the shuffle partitions.

    ``spark.sql.shuffle.partitions`` is raised to one per ``bytes_per_partition`` of input, never
    lowered. The default (one per core) suits mid-sized inputs. Past them each task's sorts and
    aggregations outgrow a 4 GB heap (50M rows in 8 partitions ran the ingest out of memory); a
    plain higher default instead makes small inputs pay for hundreds of tasks. An input of at most
    ``ONE_PARTITION_BYTES`` runs in one shuffle partition, unless the number was set or raised:
    its tasks are mostly fixed cost, and the jobs a stage runs side by side (``in_parallel``)
    keep the cores busy.

    An input that one partition per core holds runs without adaptive execution, unless it was set:
    with a partition or two per shuffle AQE has nothing to coalesce or split, and its query stages
    cost a Spark job each. Larger inputs keep Spark's default, on, which evens out skewed joins.
    """
    from runtime.storage import FileSystem

    current = int(spark.conf.get(SHUFFLE_PARTITIONS))
    files = FileSystem(spark)
    if not files.exists(input_uri):  # a glob pattern, or missing: the ingest reports what is wrong
        return current
    size = files.size(input_uri)
    wanted = math.ceil(size / bytes_per_partition)
    cores, submitted = spark.sparkContext.defaultParallelism, spark.sparkContext.getConf()
    if size <= ONE_PARTITION_BYTES and current <= cores and not submitted.contains(SHUFFLE_PARTITIONS):
        current = wanted = 1
        spark.conf.set(SHUFFLE_PARTITIONS, "1")
    if wanted > current:
        spark.conf.set(SHUFFLE_PARTITIONS, str(wanted))
    if wanted <= cores and not submitted.contains(ADAPTIVE_EXECUTION):
        spark.conf.set(ADAPTIVE_EXECUTION, "false")
    return max(current, wanted)


# spark-submit's options that stand for one Spark setting each (the others, such as --py-files, set none).
SUBMIT_OPTION_SETTINGS = {
    "--master": "spark.master",
    "--name": "spark.app.name",
    "--driver-memory": "spark.driver.memory",
    "--driver-java-options": "spark.driver.extraJavaOptions",
    "--driver-cores": "spark.driver.cores",
    "--executor-memory": "spark.executor.memory",
    "--executor-cores": "spark.executor.cores",
    "--num-executors": "spark.executor.instances",
}


def submitted_settings(submit_args: str) -> dict[str, str]:
    """The Spark settings in ``PYSPARK_SUBMIT_ARGS``: each ``--conf key=value`` and each option that stands for one.

    PySpark starts the JVM with them, but a SparkConf made before the JVM is up cannot
    see them, and what this module sets in it would replace them in the session.
    """
    words = shlex.split(submit_args)
    found = {}
    position = 0
    while position < len(words):
        option, inline, value = words[position].partition("=")
        position += 1
        if option not in ("--conf", "-c", *SUBMIT_OPTION_SETTINGS):
            continue
        if not inline:  # the value is the next word
            value = words[position] if position < len(words) else ""
            position += 1
        if option in SUBMIT_OPTION_SETTINGS:
            found[SUBMIT_OPTION_SETTINGS[option]] = value
        else:
            key, equals, setting = value.partition("=")
            if equals:
                found[key] = setting
    return found


def checkpoint_directory() -> str:
    """A directory for this process's checkpoints, removed when it exits.

    ALS checkpoints its factors every 10 iterations when there is a checkpoint directory,
    which keeps lineage short; on a cluster point ``spark.checkpoint.dir`` at HDFS or object
    storage. Checkpoints are of no use once the application ends, and Spark never removes
    them: a shared directory grew by about 4 MB (ALS item factors) with every run, whatever its size.
    """
    path = tempfile.mkdtemp(prefix="segrec-checkpoints-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def build_session(settings: SparkSettings | None = None):
    """Return the active SparkSession, creating it with ``settings`` as defaults."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    launching = not os.environ.get("PYSPARK_GATEWAY_PORT")  # under spark-submit the JVM is already running
    if launching:
        choose_java()
    # Executors must run the same Python as the driver (the project's venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    if not launching:
        # Under spark-submit the JVM is already up with the submitter's settings. A SparkConf made
        # before Python connects to it is an empty Python dict, and whatever we set there would
        # override the submitter (--master included); connected, SparkConf loads those settings.
        SparkContext._ensure_initialized()
    conf = SparkConf()
    if launching:
        conf.setAll(submitted_settings(os.environ.get("PYSPARK_SUBMIT_ARGS", "")).items())
    # The config file's [spark] extra next, so that it too wins over the defaults below.
    for key, value in settings.extra.items():
        conf.setIfMissing(key, value)
    conf.setIfMissing("spark.master", settings.master)
    conf.setIfMissing("spark.app.name", settings.app_name)
    if conf.get("spark.master").startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        conf.setIfMissing("spark.driver.memory", settings.driver_memory)
        conf.setIfMissing("spark.driver.host", "127.0.0.1")
        # In local mode the driver JVM runs the tasks too, and it is started here, so its collector and cache can be chosen.
        if launching and not conf.contains("spark.driver.extraJavaOptions"):
            conf.set("spark.driver.extraJavaOptions", local_java_options())
        if not conf.contains("spark.checkpoint.dir"):
            conf.set("spark.checkpoint.dir", checkpoint_directory())
        # Spark sizes Tungsten pages from heap / cores / 16: 64 MB for a 4 GB local JVM, which kept
        # gigabytes of the heap live in half-empty pages and caused full collections.
        conf.setIfMissing("spark.buffer.pageSize", "8m")
    if settings.shuffle_partitions is not None:
        conf.setIfMissing(SHUFFLE_PARTITIONS, str(settings.shuffle_partitions))
    # Spark's cache of 100 generated classes is too small for a pipeline: evicted classes are
    # compiled (and JIT-compiled) again.
    conf.setIfMissing("spark.sql.codegen.cache.maxEntries", "10000")
    # All date arithmetic (as-of cut-offs, day periods) is done in UTC so results
    # do not depend on the machine's time zone.
    conf.setIfMissing("spark.sql.session.timeZone", "UTC")
    conf.setIfMissing("spark.sql.execution.arrow.pyspark.enabled", "true")
    # pandas writes nanosecond timestamps, which Spark cannot read as timestamps;
    # read them as numbers and let the ingest convert them.
    conf.setIfMissing("spark.sql.legacy.parquet.nanosAsLong", "true")
    # The jobs print their own progress per stage; Spark's bar would garble it.
    conf.setIfMissing("spark.ui.showConsoleProgress", "false")
    # The driver keeps every finished query's plan and metrics for the UI, even with
    # the UI off; a pipeline runs thousands of queries, so keep only recent ones.
    conf.setIfMissing("spark.sql.ui.retainedExecutions", "50")
    conf.setIfMissing("spark.ui.retainedJobs", "200")
    conf.setIfMissing("spark.ui.retainedStages", "200")
    if settings.quiet:
        conf.setIfMissing("spark.ui.enabled", "false")

    session = SparkSession.builder.config(conf=conf).getOrCreate()
    if not conf.contains(SHUFFLE_PARTITIONS):
        # One per core: fit_to_input lowers it to one for small inputs and raises it for large ones.
        session.conf.set(SHUFFLE_PARTITIONS, str(session.sparkContext.defaultParallelism))
    session.sparkContext.setLogLevel("ERROR" if settings.quiet else "WARN")
    _silence_known_warnings(session)
    return session


# Warnings Spark prints hundreds of times per run that say nothing actionable here: ALS and
# per-segment plans make task binaries over 1 MB; refits ask to cache identical id mappings;
# the backtest's global ranks use a window without a partition on a customer-sized frame;
# long plans are truncated in messages.
QUIET_LOGGERS = (
    "org.apache.spark.scheduler.DAGScheduler",
    "org.apache.spark.sql.execution.CacheManager",
    "org.apache.spark.sql.execution.window.WindowExec",
    "org.apache.spark.util.SparkStringUtils",
)


def _silence_known_warnings(session) -> None:
    jvm = session.sparkContext._jvm
    level = jvm.org.apache.logging.log4j.Level.ERROR
    for name in QUIET_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, level)


def project_env() -> dict[str, str]:
    """This environment with the project's root first on PYTHONPATH, for child jobs and the Spark
    workers they start: they import the code being run (a clone, a worktree), whatever is installed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
