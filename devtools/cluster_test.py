"""Run the pipeline on a real Spark standalone cluster and check it matches local mode.

    python -m devtools.cluster_test --input data/online_retail_ii.parquet --work-dir output/cluster-test

Starts a standalone master and one worker on 127.0.0.1 from the installed
pyspark (``spark-class …Master`` / ``…Worker``), ships the project to the
executors as a zip for ``--py-files``, runs ``jobs/pipeline.py`` through
``spark-submit --master spark://127.0.0.1:7077``, runs the same pipeline in
local mode on the same input (or takes an existing local run with
``--local-output``), compares every table both wrote, and stops the worker
and the master by their PIDs whatever happened.

The comparison reads both outputs into pandas, so it is meant for a small
input; the cluster run itself is the same code that runs at any size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from devtools.compare import compare_outputs
from runtime.java import choose_java
from runtime.spark import project_env

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What the executors import; the web app never runs on Spark.
SHIPPED_PACKAGES = ("jobs", "runtime", "transactions", "segmentation", "cf", "coldstart", "routing")
REGISTRATION_TIMEOUT_SECONDS = 90
APP_NAME = "segrec-pipeline"
# C1 alone warms up sooner on a short run, but its code cache defaults to 48 MB: a whole pipeline
# filled it, and a full cache leaves no room for the call adapters of the classes Spark generates
# (the driver failed). 240 MB is the default of the usual tiered compiler.
QUICK_JIT = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"


class ClusterTestError(RuntimeError):
    pass


def spark_home() -> Path:
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home())


def package_project(target: Path) -> Path:
    """The project's Spark-side packages as one zip for ``--py-files``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in SHIPPED_PACKAGES:
            for source in sorted((PROJECT_ROOT / package).rglob("*.py")):
                archive.write(source, source.relative_to(PROJECT_ROOT).as_posix())
    return target


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _wait_for_line(log: Path, text: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + REGISTRATION_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise ClusterTestError(f"the {what} exited with status {process.returncode}; see {log}")
        time.sleep(0.5)
    raise ClusterTestError(f"the {what} did not report '{text}' within {REGISTRATION_TIMEOUT_SECONDS}s; see {log}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Cluster:
    url: str
    master_pid: int
    worker_pid: int


@contextlib.contextmanager
def standalone_cluster(work_dir: Path, *, host: str = "127.0.0.1", port: int = 7077, cores: int = 2,
                       memory: str = "3g") -> Iterator[Cluster]:
    """A master and one worker, started from this pyspark and stopped by PID on the way out."""
    if _port_open(host, port):
        raise ClusterTestError(f"{host}:{port} is already in use; is another Spark master running? (--port picks another)")
    choose_java()  # the same Java for the master, the worker, spark-submit and the local run
    spark_class = str(spark_home() / "bin" / "spark-class")
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_LOCAL_IP": host, "SPARK_NO_DAEMONIZE": "1"}
    started: list[subprocess.Popen] = []

    def launch(role: str, *arguments: str) -> subprocess.Popen:
        # spark-class execs java, so the PID is the JVM itself; the child keeps the log open, we need not.
        with (logs / f"{role}.log").open("w") as log:
            process = subprocess.Popen([spark_class, *arguments], stdout=log, stderr=subprocess.STDOUT, env=env)
        started.append(process)
        return process

    try:
        master = launch("master", "org.apache.spark.deploy.master.Master", "--host", host, "--port", str(port), "--webui-port", "0")
        _wait_for_line(logs / "master.log", "I have been elected leader", master, "master")
        url = f"spark://{host}:{port}"
        worker = launch("worker", "org.apache.spark.deploy.worker.Worker", url, "--host", host, "--cores", str(cores),
                        "--memory", memory, "--webui-port", "0", "--work-dir", str(work_dir / "worker"))
        _wait_for_line(logs / "worker.log", "Successfully registered with master", worker, "worker")
        yield Cluster(url=url, master_pid=master.pid, worker_pid=worker.pid)
    finally:
        for process in reversed(started):
            _stop(process)


def submit(cluster: Cluster, zip_path: Path, pipeline_args: list[str], *, log: Path,
           executor_memory: str = "2g", driver_memory: str = "2g") -> None:
    """``spark-submit jobs/pipeline.py`` in client mode against the cluster."""
    python = sys.executable  # the worker is on this machine; elsewhere executors need their own Python
    command = [
        str(spark_home() / "bin" / "spark-submit"), "--master", cluster.url, "--deploy-mode", "client", "--name", APP_NAME,
        "--py-files", str(zip_path), "--driver-memory", driver_memory, "--executor-memory", executor_memory,
        "--conf", f"spark.pyspark.python={python}", "--conf", f"spark.pyspark.driver.python={python}",
        "--conf", "spark.ui.enabled=false",
        # A check on a small input is mostly cold-JVM time, and the quick (C1) compiler alone warms up sooner.
        "--conf", f"spark.driver.extraJavaOptions={QUICK_JIT}", "--conf", f"spark.executor.extraJavaOptions={QUICK_JIT}",
    ]
    command += [str(PROJECT_ROOT / "jobs" / "pipeline.py"), *pipeline_args]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": python}
    with log.open("w") as out:
        status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if status != 0:
        raise ClusterTestError(f"spark-submit on {cluster.url} failed with status {status}; see {log}")


def run_local(pipeline_args: list[str], *, log: Path, cores: int = 2) -> None:
    """The same pipeline in local mode, in its own process (its own SparkSession).

    Both runs start in the caller's directory, so relative paths mean what they meant on the command line.
    """
    command = [sys.executable, "-m", "jobs.pipeline", "--master", f"local[{cores}]", *pipeline_args]
    with log.open("w") as out:
        status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=project_env()).returncode
    if status != 0:
        raise ClusterTestError(f"the local run failed with status {status}; see {log}")


def run_on_cluster(input_uri: str, work_dir: Path, *, config: str | None = None, port: int = 7077, cores: int = 2,
                   echo=print) -> Path:
    """The pipeline through spark-submit on a standalone master and worker started for it; its output directory.

    Touches no SparkSession of the caller's (everything runs in child processes), so it can
    run in a background thread while the caller does other Spark work.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    zip_path = package_project(work_dir / "segrec.zip")
    echo(f"packaged {', '.join(SHIPPED_PACKAGES)} into {zip_path}")
    cluster_output = work_dir / "cluster"
    with standalone_cluster(work_dir, port=port, cores=cores) as cluster:
        echo(f"standalone cluster {cluster.url}: master pid {cluster.master_pid}, worker pid {cluster.worker_pid}")
        started = time.monotonic()
        submit(cluster, zip_path, [*_pipeline_args(input_uri, config), "--output", str(cluster_output)], log=work_dir / "cluster.log")
        echo(f"cluster run: {time.monotonic() - started:.0f}s -> {cluster_output}")
    # A session that quietly fell back to local mode would pass every comparison with a local run.
    if f"Registered app {APP_NAME}" not in (work_dir / "logs" / "master.log").read_text(errors="replace"):
        raise ClusterTestError(f"the master never saw the application {APP_NAME}: the pipeline did not run on the cluster")
    echo("master and worker stopped")
    return cluster_output


def _pipeline_args(input_uri: str, config: str | None) -> list[str]:
    return ["--input", input_uri] + (["--config", config] if config else [])


def run_cluster_test(input_uri: str, work_dir: Path, *, config: str | None = None, local_output: Path | None = None,
                     port: int = 7077, cores: int = 2, echo=print) -> dict:
    work_dir.mkdir(parents=True, exist_ok=True)
    if local_output is None:
        local_output = work_dir / "local"
        started = time.monotonic()
        run_local([*_pipeline_args(input_uri, config), "--output", str(local_output)], log=work_dir / "local.log", cores=cores)
        echo(f"local[{cores}] run: {time.monotonic() - started:.0f}s -> {local_output}")
    cluster_output = run_on_cluster(input_uri, work_dir, config=config, port=port, cores=cores, echo=echo)
    results = compare_outputs(local_output, cluster_output, names=("local", "cluster"))
    for table, problem in results.items():
        echo(f"  {table}: {'equal' if problem is None else 'DIFFERENT: ' + problem}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="raw transactions (path or URI), small enough to compare in pandas")
    parser.add_argument("--work-dir", required=True, type=Path, help="where the outputs, logs and the zip go")
    parser.add_argument("--config", help="settings file passed to both pipeline runs")
    parser.add_argument("--local-output", type=Path, help="an existing local-mode output of the same input and config")
    parser.add_argument("--port", type=int, default=7077, help="master port (default 7077)")
    parser.add_argument("--cores", type=int, default=2, help="worker cores, and local[N] for the local run")
    args = parser.parse_args(argv)
    try:
        results = run_cluster_test(args.input, args.work_dir.resolve(), config=args.config, local_output=args.local_output,
                                   port=args.port, cores=args.cores)
    except ClusterTestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    different = [table for table, problem in results.items() if problem is not None]
    print(f"{len(results) - len(different)} of {len(results)} tables equal" + (f"; different: {', '.join(different)}" if different else ""))
    return 1 if different or not results else 0


if __name__ == "__main__":
    sys.exit(main())
