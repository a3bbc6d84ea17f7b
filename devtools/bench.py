"""How segrec scales: the full pipeline on synthetic data from 1M to 50M rows, next to a pandas reference.

    python -m devtools.bench                                   # 1M, 10M and 50M rows (make bench)
    python -m devtools.bench --sizes 1000000 --no-reference    # one size, Spark only
    python -m devtools.bench --sizes 1000000 --repeat 3        # the median of three pipeline runs

For each size it generates transactions with the project's generator
(``jobs.synth``), runs the whole pipeline in its own process
(``jobs.pipeline`` with ``jobs/profiles/scale.toml``), and runs the
single-machine reference (``devtools.reference``: pandas + lifetimes + implicit)
on the same data. While each process runs, its process tree is sampled from
/proc: peak resident memory of the JVM (driver and executor are one JVM in
local mode), of the Python driver and of the Python workers. The reference is
stopped when it passes its memory cap or time limit, which is recorded as its
result. Results are merged into BENCHMARKS.json next to the report (so sizes
can be run separately, on another day or machine, and the report keeps every
size) and written up in BENCHMARKS.md with a log-log plot.

Then the pipeline runs once more on the same output with ``--reuse-routes 0``:
a refit that takes the routes just chosen instead of validating, which is what
a daily run between weekly validations costs (``--no-refit`` skips it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.config import build, load_config_file
from runtime.java import choose_java, java_executable, trained_jvm_cache
from runtime.spark import SparkSettings, project_env
from jobs.synth import SynthConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCALE_PROFILE = PROJECT_ROOT / "jobs" / "profiles" / "scale.toml"
DEFAULT_SIZES = (1_000_000, 10_000_000, 50_000_000)
# Targets for this benchmark on a 2-core, 24 GB machine in local mode (issue 6).
TARGET_SECONDS = {1_000_000: 120, 10_000_000: 12 * 60, 50_000_000: 60 * 60}
TARGET_DRIVER_MEMORY_GB = 4
SAMPLE_SECONDS = 0.5
GB = 1024 ** 3


# --------------------------------------------------------------------------- measuring a process tree


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid``; none when it has just exited (the tree changes while it is sampled)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found = []
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _tree(root: int) -> list[tuple[int, int | None]]:
    """(pid, parent pid) for ``root`` and its descendants."""
    found, queue = [], [(root, None)]
    while queue:
        pid, parent = queue.pop()
        found.append((pid, parent))
        queue += [(child, pid) for child in _children(pid)]
    return found


def classify_tree(tree: list[tuple[int, int | None]], kind_of) -> dict[int, str]:
    """pid -> kind for the processes to count. A "java" child of the JVM is the JVM itself,
    caught between fork and exec when it starts a command, sharing its memory; they are left
    out. (The 50M run read 26.3 GB of JVM on a 23.5 GB machine: something was counted twice,
    and this is the likely cause, not a reproduced one.)"""
    kinds = {pid: kind_of(pid) for pid, _ in tree}
    return {pid: kinds[pid] for pid, parent in tree
            if kinds[pid] and not (kinds[pid] == "jvm" and kinds.get(parent) == "jvm")}


def _kind(pid: int, root: int) -> str | None:
    """jvm, python_driver or python_workers; None for anything else (shells, finished processes)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "java" in command.split(" ", 1)[0]:
        return "jvm"
    if "pyspark.daemon" in command or "pyspark.worker" in command:
        return "python_workers"
    return "python_driver" if pid == root or "python" in command.split(" ", 1)[0] else None


# Where a JVM's CPU goes, by its threads' names: the tasks' work, the JIT compilers, the collector; the rest
# (the driver's planning, the scheduler, the block manager) is "jvm_other".
JVM_THREAD_KINDS = (("Executor task", "tasks"), ("C1 CompilerThre", "jit"), ("C2 CompilerThre", "jit"), ("GC Thread", "gc"),
                    ("VM Thread", "gc"))
CPU_KINDS = ("tasks", "jit", "gc", "jvm_other", "python")


def thread_kind(name: str) -> str:
    """What a JVM thread named ``name`` (as /proc gives it: 15 characters at most) spends its CPU on."""
    return next((kind for prefix, kind in JVM_THREAD_KINDS if name.startswith(prefix)), "jvm_other")


def _cpu_ticks(stat: str) -> tuple[str, int]:
    """(name, user + system clock ticks) from a /proc stat line; the name sits in parentheses and may hold spaces."""
    fields = stat[stat.rindex(")") + 2:].split()
    return stat[stat.index("(") + 1:stat.rindex(")")], int(fields[11]) + int(fields[12])


def _sample_cpu(pid: int, kind: str, ticks: dict) -> None:
    """Record the CPU so far of ``pid``: per thread for a JVM (its kinds of work), whole for a Python process.

    ``ticks``: (pid, thread) -> (CPU kind, ticks), the last value seen. A thread that ends between
    two samples keeps the value of the earlier one.
    """
    try:
        if kind != "jvm":
            ticks[(pid, None)] = ("python", _cpu_ticks(Path(f"/proc/{pid}/stat").read_text())[1])
            return
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except (OSError, ValueError):
        return
    for thread in threads:
        try:
            name, used = _cpu_ticks((thread / "stat").read_text())
        except (OSError, ValueError):
            continue
        ticks[(pid, thread.name)] = (thread_kind(name), used)


def cpu_seconds(ticks: dict) -> dict[str, float]:
    """CPU seconds per kind (CPU_KINDS) from what ``_sample_cpu`` recorded."""
    per_tick = 1 / os.sysconf("SC_CLK_TCK")
    return {kind: round(sum(used for used_kind, used in ticks.values() if used_kind == kind) * per_tick, 1) for kind in CPU_KINDS}


def _private_bytes(pid: int) -> int:
    """Anonymous resident memory: heap, native allocations. Memory-mapped files (jars, Spark's
    block files) also count in VmRSS but are page cache the kernel can drop, so they are left out."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Measured:
    seconds: float
    status: int | None  # None: stopped by us
    peak_bytes: dict[str, int] = field(default_factory=dict)
    stopped_because: str | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per kind of work (CPU_KINDS), sampled


def run_measured(command: list[str], *, log: Path, env: dict | None = None, timeout: float | None = None,
                 memory_cap_bytes: int | None = None) -> Measured:
    """Run ``command``; sample its process tree's memory and CPU; stop it past ``timeout`` or ``memory_cap_bytes``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=env, start_new_session=True)
        measured = Measured(seconds=0.0, status=None)
        ticks: dict = {}
        while process.poll() is None:
            totals: dict[str, int] = {}
            for pid, kind in classify_tree(_tree(process.pid), lambda pid: _kind(pid, process.pid)).items():
                totals[kind] = totals.get(kind, 0) + _private_bytes(pid)
                _sample_cpu(pid, kind, ticks)
            for kind, value in totals.items():
                measured.peak_bytes[kind] = max(measured.peak_bytes.get(kind, 0), value)
            measured.peak_bytes["total"] = max(measured.peak_bytes.get("total", 0), sum(totals.values()))
            if memory_cap_bytes and sum(totals.values()) > memory_cap_bytes:
                measured.stopped_because = f"out of memory (passed the {memory_cap_bytes / GB:.0f} GB cap)"
            elif timeout and time.monotonic() - started > timeout:
                measured.stopped_because = f"out of time (still running after {timeout / 60:.0f} min)"
            if measured.stopped_because:
                os.killpg(process.pid, 9)
                process.wait()
                break
            time.sleep(SAMPLE_SECONDS)
    measured.seconds = round(time.monotonic() - started, 1)
    measured.status = None if measured.stopped_because else process.returncode
    measured.cpu_seconds = cpu_seconds(ticks)
    return measured


# --------------------------------------------------------------------------- one size


def _checked(measured: Measured, what: str, log: Path) -> Measured:
    if measured.status != 0:
        raise RuntimeError(f"{what} failed (status {measured.status}); see {log}")
    return measured


def code_version(report: Path) -> str:
    """The commit measured (with "+changes" when the tree differs from it), so merged results say what code each row is.

    The report's own files are left out: the first size of a run rewrites them before the next size is measured.
    """
    def git(*args):
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)

    head = git("rev-parse", "--short", "HEAD")
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+changes" if git("status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude,glob)**/{report.stem}.*").stdout.strip() else "")


def pipeline_java() -> str:
    """The Java the pipelines run chooses, and whether they start from its JVM cache (make jvm-cache)."""
    return f"Java {choose_java()}" + (" + JVM cache" if trained_jvm_cache() else "")


def median_run(runs: list[tuple[Measured, dict]]) -> dict:
    """What a size's row reports of its pipeline runs ((measured, the stages of its run.json) each): the median run's time,
    stages and CPU (the lower median of an even number), every run's time, and the highest memory any of them reached."""
    ordered = sorted(runs, key=lambda run: run[0].seconds)
    median, stages = ordered[(len(ordered) - 1) // 2]
    peaks = {kind: max(run.peak_bytes.get(kind, 0) for run, _ in runs) for kind in {kind for run, _ in runs for kind in run.peak_bytes}}
    return {
        "pipeline_seconds": median.seconds,
        "pipeline_runs": [run.seconds for run, _ in ordered],
        "peak_bytes": peaks,
        "cpu_seconds": median.cpu_seconds,
        "rows": stages["ingest"]["rows_in"],
        "clean_rows": stages["ingest"]["rows_out"],
        "customers": stages["segments"]["rows_out"],
        "recommendation_rows": stages["recommendations"]["rows_out"],
        "stage_seconds": {name: stage["seconds"] for name, stage in stages.items()},
    }


def bench_size(rows: int, work_dir: Path, *, profile: Path, reference: bool, reference_timeout: float, driver_memory: str,
               reference_memory_cap: int, report: Path, refit: bool = True, repeat: int = 1, echo=print) -> dict:
    """One size: generate its input once, run the pipeline ``repeat`` times (a machine's speed drifts by 10% or more
    within an hour, so one run can land either side of a target), then the refit and the reference once each."""
    base = work_dir / f"rows-{rows}"
    data, output = base / "input", base / "output"
    env = project_env()
    env["PYSPARK_SUBMIT_ARGS"] = f"--driver-memory {driver_memory} pyspark-shell"  # the JVM's heap is fixed when it starts
    python = sys.executable
    result: dict = {"rows_requested": rows, "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "commit": code_version(report), "java": pipeline_java(), "cpu": cpu_model()}

    if not (data / "transactions" / "_SUCCESS").exists():
        log = base / "synth.log"
        echo(f"{rows:,} rows: generating ...")
        synth = _checked(run_measured([python, "-m", "jobs.synth", "--output", str(data), "--rows", str(rows), "--config", str(profile)],
                                      log=log, env=env), "the generator", log)
        result["synth_seconds"] = synth.seconds

    def run_pipeline(name: str, *flags: str) -> tuple[Measured, Path]:
        log = base / f"{name}.log"
        echo(f"{rows:,} rows: {name} ...")
        return run_measured([python, "-m", "jobs.pipeline", "--input", str(data / "transactions"), "--output", str(output),
                             "--config", str(profile), *flags], log=log, env=env), log

    def stages_run() -> dict:
        return {stage["stage"]: stage for stage in json.loads((output / "run.json").read_text())["stages"]}

    runs = []
    for run in range(1, repeat + 1):
        pipeline, log = run_pipeline("pipeline" if run == 1 else f"pipeline-{run}")
        if pipeline.status != 0:
            # Recorded, not raised: at the largest sizes a failure (out of memory, say) is the finding.
            result.update({"pipeline_seconds": pipeline.seconds, "peak_bytes": pipeline.peak_bytes, "driver_memory": driver_memory,
                           "cpu_seconds": pipeline.cpu_seconds, "pipeline_failed": f"status {pipeline.status}; see {log}"})
            echo(f"{rows:,} rows: pipeline failed after {pipeline.seconds:.0f}s ({result['pipeline_failed']})")
            return result
        runs.append((pipeline, stages_run()))
        echo(f"{rows:,} rows: pipeline {pipeline.seconds:.0f}s, JVM peak {pipeline.peak_bytes.get('jvm', 0) / GB:.1f} GB")
    result.update(median_run(runs), driver_memory=driver_memory)
    if refit:
        measured, log = run_pipeline("refit", "--reuse-routes", "0")
        result["refit"] = {"seconds": measured.seconds, "peak_bytes": measured.peak_bytes}
        manifest = json.loads((output / "recommendations" / "manifest.json").read_text()) if measured.status == 0 else {}
        reuse = manifest.get("reuse") or {}
        if not reuse.get("reused"):
            result["refit"]["failed"] = f"{reuse.get('reason') or f'status {measured.status}'}; see {log}"
        else:
            result["refit"]["stage_seconds"] = {name: stage["seconds"] for name, stage in stages_run().items()}
        echo(f"{rows:,} rows: refit {result['refit'].get('failed') or f'{measured.seconds:.0f}s'}")
    if reference:
        log = base / "reference.log"
        echo(f"{rows:,} rows: reference ...")
        report = base / "reference.json"
        report.unlink(missing_ok=True)
        measured = run_measured([python, "-m", "devtools.reference", "--input", str(data / "transactions"), "--report", str(report)],
                                log=log, env=env, timeout=reference_timeout, memory_cap_bytes=reference_memory_cap)
        outcome = json.loads(report.read_text()) if measured.status == 0 else {}
        result["reference"] = {
            "seconds": measured.seconds, "peak_bytes": measured.peak_bytes.get("total", 0),
            "result": "completed" if measured.status == 0 else measured.stopped_because or f"failed (status {measured.status}; see {log})",
            "step_seconds": outcome.get("seconds", {}),
        }
        echo(f"{rows:,} rows: reference {result['reference']['result']} after {measured.seconds:.0f}s")
    return result


# --------------------------------------------------------------------------- the write-up


def cpu_model() -> str:
    return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")


def machine() -> dict:
    memory = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")), 0)
    model = cpu_model()
    choose_java()  # the Java the pipelines it runs will choose
    java = subprocess.run([java_executable(), "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    import pyspark

    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(memory / GB, 1), "os": platform.platform(),
            "python": platform.python_version(), "java": java, "pyspark": pyspark.__version__}


def _gb(value: int | None) -> str:
    return f"{value / GB:.1f}" if value else "–"


def _minutes(seconds: float | None) -> str:
    return f"{seconds / 60:.1f}" if seconds is not None else "–"


def write_plot(results: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    def rows(r):
        return r.get("rows", r["rows_requested"])

    completed = [(rows(r), r["pipeline_seconds"]) for r in results if "pipeline_failed" not in r]
    failed = [(rows(r), r["pipeline_seconds"]) for r in results if "pipeline_failed" in r]
    if completed:
        axes.plot(*zip(*completed), "o-", label="segrec on Spark (local[*], whole pipeline)")
    if failed:
        axes.plot(*zip(*failed), "x", markersize=10, color="tab:blue", label="segrec failed")
    finished = [(rows(r), r["reference"]["seconds"]) for r in results if r.get("reference", {}).get("result") == "completed"]
    stopped = [(rows(r), r["reference"]["seconds"]) for r in results if r.get("reference") and r["reference"]["result"] != "completed"]
    if finished:
        axes.plot(*zip(*finished), "s--", label="pandas + lifetimes + implicit (reference)")
    if stopped:
        axes.plot(*zip(*stopped), "x", markersize=10, color="tab:red", label="reference stopped (memory or time)")
    targets = sorted(TARGET_SECONDS.items())
    axes.plot(*zip(*targets), "_", markersize=18, color="grey", label="target")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("transaction rows")
    axes.set_ylabel("wall time (s)")
    axes.set_title("segrec end to end against rows (2 cores, log-log)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)


def _gigabytes(setting: str) -> float:
    """A JVM memory setting ("4g", "4096m") in GB."""
    value, unit = setting[:-1], setting[-1].lower()
    return float(value) * {"g": 1, "m": 1 / 1024, "t": 1024}[unit]


def _code(result: dict) -> str:
    """The commit a row measured, and its Java and CPU where recorded: the same code ran half as fast again on one
    2-core machine as on another, so rows measured on different machines are not comparable."""
    return ", ".join([result.get("commit", "unknown"), *(result[key] for key in ("java", "cpu") if result.get(key))])


def _spread(result: dict) -> str:
    """" (median of 3 runs, 118–130 s)" after a total measured more than once (in seconds: minutes would round the
    spread away); nothing after a single run."""
    runs = result.get("pipeline_runs", [])
    return f" (median of {len(runs)} runs, {min(runs):.0f}–{max(runs):.0f} s)" if len(runs) > 1 else ""


def target_verdict(result: dict) -> str:
    """The issue's target for this size (time; for 50M also the driver memory) and whether the run met it."""
    target_seconds = TARGET_SECONDS.get(result["rows_requested"])
    if target_seconds is None:
        return "–"
    met = "pipeline_failed" not in result and result["pipeline_seconds"] <= target_seconds
    target = _minutes(target_seconds)
    if result["rows_requested"] == max(TARGET_SECONDS):
        target += f", driver ≤ {TARGET_DRIVER_MEMORY_GB} GB"
        met = met and _gigabytes(result.get("driver_memory", "4g")) <= TARGET_DRIVER_MEMORY_GB
    return f"{target} {'✓' if met else '✗'}"


def cpu_section(results: list[dict]) -> list[str]:
    """Where each pipeline run's CPU went, for the rows that recorded it."""
    measured = [r for r in results if r.get("cpu_seconds")]
    if not measured:
        return []
    lines = [
        "## Where the pipeline's CPU went (seconds)",
        "",
        f"Each thread's CPU time, read from /proc every {SAMPLE_SECONDS} s like the memory and summed by what the thread does: "
        "Spark's tasks, the JVM's JIT compilers (C1, C2), its collector, its other threads (the driver planning queries, the "
        "scheduler) and the Python processes (the driver and the workers). CPU above the wall time is both cores at work.",
        "",
        "| rows | wall | CPU | tasks | JIT compilers | collector | other JVM threads | Python | code |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in measured:
        cpu = r["cpu_seconds"]
        lines.append(f"| {r.get('rows', r['rows_requested']):,} | {r['pipeline_seconds']:.0f} | {sum(cpu.values()):.0f} | "
                     + " | ".join(f"{cpu.get(kind, 0):.0f}" for kind in CPU_KINDS) + f" | {_code(r)} |")
    return lines + [""]


def write_report(results: list[dict], target: Path, plot: Path, *, about: dict, items: int, command: str = "make bench") -> None:
    stages = ["ingest", "segments", "backtest", "recommendations", "report"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` (`devtools/bench.py`); re-run it to reproduce. What the figures mean and where the time goes: "
        "docs/performance.md. Synthetic data from `jobs/synth.py` "
        f"(planted value tiers, {items:,} items, Online Retail II dirt), pipeline settings `jobs/profiles/scale.toml`, "
        "Spark in local mode (`local[*]`) with the driver heap shown per row (`--driver-memory`, default 4g).",
        "",
        f"Machine: {about['cpu']}, {about['cores']} cores, {about['memory_gb']} GB; {about['os']}; "
        f"Python {about['python']}, PySpark {about['pyspark']}; the jobs would run on {about['java']} now "
        "(each row's Java and CPU are in its code column when they were recorded).",
        "",
        f"![time against rows]({plot.name})",
        "",
        "## segrec pipeline (seconds per stage, total in minutes)",
        "",
        "| rows | clean rows | customers | " + " | ".join(stages) + " | **total** | target | driver heap | JVM peak (GB) | Python workers peak (GB) | code |",
        "|" + "---:|" * (len(stages) + 8) + "---|",
    ]
    for r in results:
        failed = "pipeline_failed" in r
        sizes = "| {:,} (requested) | – | – | ".format(r["rows_requested"]) if failed else f"| {r['rows']:,} | {r['clean_rows']:,} | {r['customers']:,} | "
        total = f"failed after {_minutes(r['pipeline_seconds'])}" if failed else f"**{_minutes(r['pipeline_seconds'])}**" + _spread(r)
        lines.append(
            sizes + " | ".join(f"{r['stage_seconds'][stage]:.0f}" if stage in r.get("stage_seconds", {}) else "–" for stage in stages)
            + f" | {total} | {target_verdict(r)} | {r.get('driver_memory', '4g')} | {_gb(r['peak_bytes'].get('jvm'))} | {_gb(r['peak_bytes'].get('python_workers'))} | "
            f"{_code(r)} |")
    lines += [
        "",
        "Total is the wall time of the `jobs.pipeline` process, JVM start-up included. Peaks are private resident memory "
        f"(RssAnon: heap and native allocations, not memory-mapped files) sampled every {SAMPLE_SECONDS} s; in local mode "
        "the driver and the executor are one JVM, whose heap is the driver memory. "
        f"The largest size's target also asks for a driver of at most {TARGET_DRIVER_MEMORY_GB} GB.",
        "",
    ]
    notes = [f"- {r.get('rows', r['rows_requested']):,} rows: {r['peak_note']}." for r in results if r.get("peak_note")]
    lines += notes + ([""] if notes else [])
    lines += cpu_section(results)
    refits = [r for r in results if r.get("refit")]
    if refits:
        lines += [
            "## Refit with the routes just chosen (`--reuse-routes 0`)",
            "",
            "The pipeline run again on the same output: every stage runs, but the recommendations stage takes the routes and "
            "ALS settings the run above chose instead of validating (docs/architecture.md, \"Refitting without validating\"). This is what a "
            "daily run between weekly validations costs; the targets above are for the whole pipeline, validation included.",
            "",
            "| rows | " + " | ".join(stages) + " | **total** | JVM peak (GB) | code |",
            "|" + "---:|" * (len(stages) + 3) + "---|",
        ]
        for r in refits:
            refit = r["refit"]
            cells = (["–"] * len(stages) + [f"failed: {refit['failed']}"] if "failed" in refit else
                     [f"{refit['stage_seconds'][stage]:.0f}" for stage in stages] + [f"**{_minutes(refit['seconds'])}**"])
            lines.append(f"| {r['rows']:,} | " + " | ".join(cells) + f" | {_gb(refit['peak_bytes'].get('jvm'))} | {_code(r)} |")
        lines.append("")
    lines += [
        "## Against a single-machine reference",
        "",
        "`devtools/reference.py`: pandas + lifetimes + implicit, the same cleaning, RFM, BG/NBD + Gamma-Gamma, K-means and per-segment "
        "ALS (top-10 lists and also-bought lists), with no hold-out, no route choice and no quarantine: less work than the pipeline.",
        "",
        "| rows | reference | reference time (min) | reference peak (GB) | segrec time (min) | segrec ÷ reference |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        reference = r.get("reference")
        if not reference:
            continue
        if reference["result"] != "completed":
            ratio = "reference did not finish"
        else:
            ratio = "–" if "pipeline_failed" in r else f"{r['pipeline_seconds'] / reference['seconds']:.1f}×"
        lines.append(f"| {r.get('rows', r['rows_requested']):,} | {reference['result']} | {_minutes(reference['seconds'])} | {_gb(reference['peak_bytes'])} | "
                     f"{_minutes(r['pipeline_seconds'])} | {ratio} |")
    target.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- the job


def make_command(sizes) -> str:
    return f"make bench SIZES={','.join(str(size) for size in sizes)}"


def merge_results(path: Path, new: list[dict]) -> list[dict]:
    old = json.loads(path.read_text()) if path.exists() else []
    by_size = {r["rows_requested"]: r for r in old} | {r["rows_requested"]: r for r in new}
    merged = [by_size[size] for size in sorted(by_size)]
    path.write_text(json.dumps(merged, indent=2))
    return merged


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(part)) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes numbers of rows separated by commas, got {text!r}") from None
    if not sizes or min(sizes) < 1000:
        raise argparse.ArgumentTypeError("--sizes needs at least one size of 1000 rows or more")
    return sizes


def positive_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--repeat takes a whole number of runs, 1 or more, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES), help="rows per run, e.g. 1e6,1e7,5e7")
    parser.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "output" / "bench", help="generated data, outputs and logs")
    parser.add_argument("--report", type=Path, default=PROJECT_ROOT / "BENCHMARKS.md",
                        help="the write-up; its plot (.png) and the merged results (.json) go next to it")
    parser.add_argument("--profile", type=Path, default=SCALE_PROFILE, help="pipeline settings (default jobs/profiles/scale.toml)")
    parser.add_argument("--driver-memory", default=SparkSettings().driver_memory,
                        help="JVM heap of the pipeline (in local mode driver and executor are one JVM); default 4g")
    parser.add_argument("--no-reference", dest="reference", action="store_false", help="skip the pandas reference")
    parser.add_argument("--no-refit", dest="refit", action="store_false", help="skip the second run that reuses the routes")
    parser.add_argument("--reference-timeout-minutes", type=float, default=60.0)
    parser.add_argument("--reference-memory-gb", type=float, default=20.0, help="stop the reference past this resident memory")
    parser.add_argument("--repeat", type=positive_count, default=1,
                        help="runs of the pipeline per size; the report gives the median and the range (default 1)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the merged results, run nothing")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    plot, about = args.report.with_suffix(".png"), machine()
    items = build(SynthConfig, load_config_file(str(args.profile)).get("synth")).items

    def report(new_results: list[dict]) -> None:
        # Results merge across runs, so the command that reproduces the report names every size in it.
        merged = merge_results(args.report.with_suffix(".json"), new_results)
        write_plot(merged, plot)
        write_report(merged, args.report, plot, about=about, items=items, command=make_command(r["rows_requested"] for r in merged))
        print(f"wrote {args.report} and {plot} from {len(merged)} measured size(s)")

    if args.report_only:
        report([])
        return 0
    for rows in args.sizes:
        result = bench_size(rows, args.work_dir, profile=args.profile, reference=args.reference,
                            reference_timeout=args.reference_timeout_minutes * 60, reference_memory_cap=int(args.reference_memory_gb * GB),
                            driver_memory=args.driver_memory, report=args.report, refit=args.refit, repeat=args.repeat)
        report([result])  # after every size, so a long run that is stopped keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
