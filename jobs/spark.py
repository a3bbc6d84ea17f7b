"""The one place a SparkSession is built.

Local runs (``python -m jobs.…``) get defaults that suit one machine. Under
``spark-submit --master …``, or with ``PYSPARK_SUBMIT_ARGS`` for a local run,
everything the submitter set wins: our defaults are only applied to keys nobody
has set (``SparkConf.setIfMissing``).
"""

from __future__ import annotations

import argparse
import atexit
import glob
import hashlib
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

MIN_JAVA_MAJOR = 17
JAVA_INSTALL_HINT = "install it with: apt-get install openjdk-17-jre-headless (Debian/Ubuntu)"
# The Javas Spark 4.3 runs on ("Spark runs on Java 17/21/25"); the newest runs the pipeline fastest
# (docs/performance.md).
SUPPORTED_JAVA_MAJORS = (17, 21, 25)
JVM_DIRECTORY = "/usr/lib/jvm"  # where Debian's, Ubuntu's, Fedora's and Adoptium's packages install Javas


class JavaNotFoundError(RuntimeError):
    pass


def _version(text: str) -> tuple[int, ...] | None:
    """(major, minor, ...) from a version string such as "25.0.3" or Java 8's "1.8.0_292"."""
    numbers = [int(part) for part in re.findall(r"\d+", text)]
    if not numbers:
        return None
    return tuple(numbers[1:]) if numbers[0] == 1 and len(numbers) > 1 else tuple(numbers)


def java_executable() -> str:
    """The ``java`` that Spark will launch: JAVA_HOME's, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise JavaNotFoundError(f"Java {MIN_JAVA_MAJOR}+ is required by Spark but was not found; {JAVA_INSTALL_HINT}")
    return java


def java_major_version() -> int:
    """The major version of the Java that Spark will launch (JAVA_HOME first, then PATH)."""
    java = java_executable()
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "([\d._]+)', result.stderr + result.stdout)
    version = _version(match.group(1)) if match else None
    if not version:
        raise JavaNotFoundError(f"could not read the version of {java}; {JAVA_INSTALL_HINT}")
    return version[0]


def java_release(home: str) -> dict[str, str]:
    """The settings of a Java home's ``release`` file (JAVA_VERSION, JAVA_RUNTIME_VERSION, ...); empty without one."""
    try:
        with open(os.path.join(home, "release"), encoding="utf-8", errors="replace") as lines:
            return dict(re.findall(r'^(\w+)="([^"]*)"', lines.read(), re.M))
    except OSError:
        return {}


def installed_javas(directory: str = JVM_DIRECTORY) -> dict[str, tuple[int, ...]]:
    """Java homes in ``directory`` and their versions, read from each one's ``release`` file."""
    found = {}
    for home in sorted(glob.glob(os.path.join(directory, "*"))):
        if not os.path.isfile(os.path.join(home, "bin", "java")):
            continue
        version = _version(java_release(home).get("JAVA_VERSION", ""))
        if version:
            found[home] = version
    return found


def choose_java(directory: str = JVM_DIRECTORY) -> int:
    """Choose the Java for the JVMs this process starts, check it, and return its major version.

    ``JAVA_HOME`` wins. Without it, when ``directory`` holds a Java that Spark supports
    and that is newer than the one on PATH (or there is none on PATH), ``JAVA_HOME`` is
    set to it, so that every JVM started from here (the local Spark driver, and the
    ``spark-class`` and ``spark-submit`` the cluster test runs) uses the same Java.
    """
    if not os.environ.get("JAVA_HOME"):
        supported = {home: version for home, version in installed_javas(directory).items() if version[0] in SUPPORTED_JAVA_MAJORS}
        if supported:
            newest = max(supported, key=supported.get)
            try:
                on_path = java_major_version()
            except JavaNotFoundError:
                on_path = None
            if on_path is None or on_path not in SUPPORTED_JAVA_MAJORS or on_path < supported[newest][0]:
                os.environ["JAVA_HOME"] = newest
    return check_java()


def check_java() -> int:
    major = java_major_version()
    if major < MIN_JAVA_MAJOR:
        raise JavaNotFoundError(f"Spark 4 needs Java {MIN_JAVA_MAJOR}+, found Java {major}; {JAVA_INSTALL_HINT}")
    return major


@dataclass(frozen=True)
class SparkSettings:
    """Defaults for a session; any key the submitter already set is left alone."""

    app_name: str = "segrec"
    master: str = "local[*]"
    shuffle_partitions: int | None = None  # the least (None: one per core); the pipeline raises it with the input's size
    driver_memory: str = "4g"
    quiet: bool = False  # no web UI and only errors logged (tests, benchmarks)
    extra: dict[str, str] = field(default_factory=dict)


# The throughput collector, not Java's default G1: Spark's tasks allocate fast and keep little, and
# G1's concurrent marking and heavier write barriers cost more than they save on a few cores
# (docs/performance.md). The log settings keep to warnings and errors, without Spark's start-up
# notices: a clear error is the first thing an analyst reads.
LOCAL_LOG_SETTINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")
LOCAL_JAVA_OPTIONS = f"-XX:+UseParallelGC -Dlog4j2.configurationFile={shlex.quote(LOCAL_LOG_SETTINGS)}"

# A JVM started with -XX:AOTCache finds the classes an earlier training run used already loaded and
# linked, and the profiles of its hot methods (JEP 483, 515; Java 25's -XX:AOTCacheOutput makes one,
# JEP 514), so it starts seconds sooner. `make jvm-cache` trains it (devtools.jvm_cache).
JVM_CACHE_JAVA_MAJOR = 25


def jvm_cache_directory() -> str:
    """``SEGREC_JVM_CACHE_DIR``, else segrec's directory in the user's cache (``XDG_CACHE_HOME``, ``~/.cache``)."""
    user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("SEGREC_JVM_CACHE_DIR") or os.path.join(user_cache, "segrec")


def jvm_cache_file() -> str | None:
    """Where the AOT cache of the Java and Spark that local sessions launch belongs (made or not); None when
    that Java cannot use one (before Java 25, or without a ``release`` file that says its build).

    A cache holds one JVM build's view of one class path, so the name carries both: another Java or
    another Spark installation looks for a cache of its own instead of one that would be ignored.
    """
    import pyspark

    java = os.path.realpath(java_executable())
    build = java_release(os.path.dirname(os.path.dirname(java))).get("JAVA_RUNTIME_VERSION", "")
    version = _version(build)
    if not version or version[0] < JVM_CACHE_JAVA_MAJOR:
        return None
    spark_home = os.path.realpath(os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__))
    digest = hashlib.sha256("\0".join((java, build, spark_home)).encode()).hexdigest()[:12]
    return os.path.join(jvm_cache_directory(), f"spark-{pyspark.__version__}-java-{build}-{digest}.aot")


def trained_jvm_cache() -> str | None:
    """The AOT cache local sessions start from: ``jvm_cache_file()`` once `make jvm-cache` has trained it."""
    cache = jvm_cache_file()
    return cache if cache and os.path.isfile(cache) else None


def local_java_options() -> str:
    """The local driver JVM's options: the collector, the log settings, and the AOT cache once trained for this Java and Spark."""
    cache = trained_jvm_cache()
    return f"{LOCAL_JAVA_OPTIONS} -XX:AOTCache={shlex.quote(cache)}" if cache else LOCAL_JAVA_OPTIONS


BYTES_PER_SHUFFLE_PARTITION = 8 * 1024 ** 2  # of input files: about a million transaction rows as Parquet


ADAPTIVE_EXECUTION = "spark.sql.adaptive.enabled"


def fit_to_input(spark, input_uri: str, bytes_per_partition: int = BYTES_PER_SHUFFLE_PARTITION) -> int:
    """Size the session to the input; returns the shuffle partitions.

    ``spark.sql.shuffle.partitions`` is raised to one per ``bytes_per_partition`` of input, never
    lowered. The default (one per core) suits small inputs. Past them each task's sorts and
    aggregations outgrow a 4 GB heap (50M rows in 8 partitions ran the ingest out of memory); a
    plain higher default instead makes small inputs pay for hundreds of tasks.

    An input that one partition per core holds runs without adaptive execution, unless it was set:
    with a partition or two per shuffle AQE has nothing to coalesce or split, and its query stages
    cost a Spark job each. Larger inputs keep Spark's default, on, which evens out skewed joins.
    """
    from jobs.storage import FileSystem

    current = int(spark.conf.get("spark.sql.shuffle.partitions"))
    files = FileSystem(spark)
    if not files.exists(input_uri):  # a glob pattern, or missing: the ingest reports what is wrong
        return current
    wanted = math.ceil(files.size(input_uri) / bytes_per_partition)
    if wanted > current:
        spark.conf.set("spark.sql.shuffle.partitions", str(wanted))
    if wanted <= spark.sparkContext.defaultParallelism and not spark.sparkContext.getConf().contains(ADAPTIVE_EXECUTION):
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
        conf.setIfMissing("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
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
    if not conf.contains("spark.sql.shuffle.partitions"):
        # One per core: on small inputs more only adds tasks; fit_to_input raises it for large ones.
        session.conf.set("spark.sql.shuffle.partitions", str(session.sparkContext.defaultParallelism))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that this machine can run segrec's Spark jobs.")
    parser.add_argument("--check-java", action="store_true", help="check for Java 17+, say which the jobs will use, and exit")
    args = parser.parse_args(argv)
    if args.check_java:
        try:
            major = choose_java()
            print(f"Java {major} found: {java_executable()}")
            if jvm_cache_file():
                cache = trained_jvm_cache()
                print(f"JVM cache: {cache}" if cache else "no JVM cache yet: `make jvm-cache` trains one (devtools/jvm_cache.py)")
        except JavaNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
