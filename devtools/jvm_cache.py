"""Train the ahead-of-time cache of the local Spark driver's JVM (Java 25+).

    python -m devtools.jvm_cache            # make jvm-cache; --force trains again

Every local run starts a JVM that loads and links thousands of Spark's classes
and profiles its methods again before the JIT compiles them. Started
with ``-XX:AOTCache``, the JVM finds that work done by a training run (see
``runtime.spark.JVM_CACHE_JAVA_MAJOR`` for what it saves).

The training run is the pipeline on a small synthetic shop, in a JVM started to
record (``-XX:AOTCacheOutput``): when it exits, it assembles the cache (about
200 MB) in a child JVM. The cache is written under a temporary name and renamed
when complete, so a failed training leaves the previous cache in place.

Local sessions use the cache when one exists for the Java and Spark they launch
(``runtime.spark.jvm_cache_file``); a JVM that still finds it unusable (a Spark jar
changed since) runs without it. spark-submit and clusters start their own JVMs
and never use it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Callable

from runtime import cli
from runtime.java import JVM_CACHE_JAVA_MAJOR, LOCAL_JAVA_OPTIONS, choose_java, jvm_cache_file, trained_jvm_cache
from runtime.spark import SparkSettings, build_session, project_env

TRAINING_CUSTOMERS = 800  # a shop big enough for every stage and model to do real work: about 52k rows
# The cache's assembly prints a warning per class it cannot keep (Spark's generated classes, signed jars).
QUIET_ASSEMBLY = "-Xlog:aot=error,cds=error"
JVM_EXIT_TIMEOUT_SECONDS = 600


def pipeline_workload(spark, work_dir: str) -> None:
    """The pipeline, every stage and model at their defaults, on a synthetic shop: the code real runs use."""
    from jobs import pipeline, synth

    shop = os.path.join(work_dir, "shop")
    synth.main(["--output", shop, "--customers", str(TRAINING_CUSTOMERS)])
    # Tuning repeats the ALS fits, which the validation fits already train the JVM on.
    pipeline.main(["--input", os.path.join(shop, "transactions"), "--output", os.path.join(work_dir, "output"), "--tune-budget", "0"])


def session_workload(spark, work_dir: str) -> None:
    """One query: a cache of what every session's start-up loads, trained in seconds."""
    spark.range(1000).selectExpr("sum(id)").first()


WORKLOADS: dict[str, Callable[[object, str], None]] = {"pipeline": pipeline_workload, "session": session_workload}


def record(output: str, workload: Callable[[object, str], None] = pipeline_workload) -> None:
    """Run ``workload(spark, work_dir)`` in a new JVM that records, and wait while it writes its cache to ``output``.

    For a process without a JVM yet (``main`` runs it in one of its own).
    """
    from pyspark import SparkContext

    if SparkContext._gateway is not None:
        raise cli.JobError("the JVM cache is recorded by a JVM of its own: run it in a new process")
    options = f"{LOCAL_JAVA_OPTIONS} {QUIET_ASSEMBLY} -XX:AOTCacheOutput={shlex.quote(output)}"
    with tempfile.TemporaryDirectory(prefix="segrec-jvm-cache-") as work_dir:
        spark = build_session(SparkSettings(app_name="segrec-jvm-cache", quiet=True, extra={"spark.driver.extraJavaOptions": options}))
        workload(spark, work_dir)
        spark.stop()
        # PySpark's JVM exits when its standard input closes; on the way out it assembles the cache.
        process = SparkContext._gateway.proc
        process.stdin.close()
        process.wait(timeout=JVM_EXIT_TIMEOUT_SECONDS)


def train(target: str, workload: str = "pipeline") -> None:
    """Record a cache in a process of its own (its JVM prints pages) and put it at ``target`` once complete."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial, log = f"{target}.{os.getpid()}.partial", f"{target}.log"
    # A cache only serves JVMs started the way it was recorded: the real runs' defaults, not a submitter's options.
    env = {key: value for key, value in project_env().items() if key != "PYSPARK_SUBMIT_ARGS"}
    try:
        with open(log, "w") as output:
            result = subprocess.run([sys.executable, "-m", "devtools.jvm_cache", "--record", partial, "--workload", workload], stdout=output,
                                    stderr=subprocess.STDOUT, env=env, check=False)
        if result.returncode != 0 or not os.path.isfile(partial):
            raise cli.JobError(f"training the JVM cache failed (exit status {result.returncode}); its output is in {log}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="train again even when the cache exists")
    parser.add_argument("--workload", choices=WORKLOADS, default="pipeline",
                        help="what the training run does: the pipeline on a small shop (default), or only start a session")
    parser.add_argument("--record", metavar="FILE", help=argparse.SUPPRESS)  # train's own process
    args = parser.parse_args(argv)
    if args.record:
        record(args.record, WORKLOADS[args.workload])
        return 0
    major = choose_java()
    target = jvm_cache_file()
    if target is None:
        print(f"Java {major} cannot use an ahead-of-time cache (Java {JVM_CACHE_JAVA_MAJOR}+ can, with its release file): nothing to do")
        return 0
    if trained_jvm_cache() and not args.force:
        print(f"JVM cache present: {target}")
        return 0
    print(f"training the JVM cache for Java {major} ({args.workload} workload) ...")
    started = time.monotonic()
    train(target, args.workload)
    print(f"JVM cache written in {time.monotonic() - started:.0f}s: {target} ({os.path.getsize(target) / 1024 ** 2:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
