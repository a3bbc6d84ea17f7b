"""The benchmark's own machinery: process-tree memory sampling, limits, and the write-up."""

import subprocess
import sys

import pytest

from devtools import bench

MACHINE = {"cpu": "test cpu", "cores": 2, "memory_gb": 24, "os": "linux", "python": "3.11", "java": "java 17", "pyspark": "4"}
ALLOCATE = "import time; block = bytearray({mb} * 1024 * 1024); block[::4096] = b'x' * len(block[::4096]); time.sleep({seconds})"


def test_peak_memory_of_a_child_process_is_measured(tmp_path):
    measured = bench.run_measured([sys.executable, "-c", ALLOCATE.format(mb=300, seconds=1.5)], log=tmp_path / "log")
    assert measured.status == 0
    assert 280 * 2**20 < measured.peak_bytes["python_driver"] < 600 * 2**20


def test_a_process_past_its_memory_cap_is_stopped_and_reported(tmp_path):
    measured = bench.run_measured([sys.executable, "-c", ALLOCATE.format(mb=400, seconds=30)], log=tmp_path / "log",
                                  memory_cap_bytes=200 * 2**20)
    assert measured.status is None
    assert measured.stopped_because.startswith("out of memory")
    assert measured.seconds < 20


def test_a_process_past_its_time_limit_is_stopped_and_reported(tmp_path):
    measured = bench.run_measured([sys.executable, "-c", "import time; time.sleep(30)"], log=tmp_path / "log", timeout=1)
    assert measured.status is None
    assert measured.stopped_because.startswith("out of time")


def test_a_process_that_exits_while_its_tree_is_read_has_no_children():
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    assert bench._tree(exited.pid) == [(exited.pid, None)]


def test_children_that_come_and_go_while_sampled_do_not_stop_the_measurement(tmp_path):
    churn = "import subprocess, sys, time\nend = time.time() + 3\nwhile time.time() < end: subprocess.run([sys.executable, '-c', 'pass'])"
    measured = bench.run_measured([sys.executable, "-c", churn], log=tmp_path / "log")
    assert measured.status == 0
    assert measured.peak_bytes["python_driver"] > 0


@pytest.mark.parametrize("text, sizes", [("1e6,1e7", [1_000_000, 10_000_000]), ("50000", [50_000])])
def test_sizes_are_read_in_plain_or_scientific_notation(text, sizes):
    assert bench.parse_sizes(text) == sizes


@pytest.mark.parametrize("text", ["", "ten", "500"])
def test_bad_sizes_are_refused(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_sizes(text)


def result(rows: int, seconds: float, reference: dict | None) -> dict:
    return {"rows_requested": rows, "rows": rows - 10, "clean_rows": rows // 2, "customers": rows // 100,
            "stage_seconds": {"ingest": 6.0, "segments": 12.0, "backtest": 6.0, "recommendations": seconds - 30, "report": 6.0},
            "pipeline_seconds": seconds, "peak_bytes": {"jvm": 3 * bench.GB, "python_workers": bench.GB // 2},
            **({"reference": reference} if reference else {})}


def test_report_has_a_row_per_size_with_target_verdicts_ratios_and_the_plot(tmp_path):
    results = [
        result(1_000_000, 100.0, {"seconds": 10.0, "peak_bytes": bench.GB, "result": "completed", "step_seconds": {}}),
        result(10_000_000, 900.0, {"seconds": 600.0, "peak_bytes": 20 * bench.GB, "result": "out of memory (passed the 20 GB cap)",
                                   "step_seconds": {}}),
    ]
    failed = {"rows_requested": 50_000_000, "pipeline_seconds": 1800.0, "pipeline_failed": "status 1; see pipeline.log",
              "peak_bytes": {"jvm": 5 * bench.GB}, "driver_memory": "4g", "commit": "abc1234", "java": "Java 25", "cpu": "AMD EPYC",
              "peak_note": "sampled by hand",
              "reference": {"seconds": 300.0, "peak_bytes": 20 * bench.GB, "result": "out of memory (passed the 20 GB cap)", "step_seconds": {}}}
    results.append(failed)
    bench.write_plot(results, tmp_path / "BENCHMARKS.png")
    bench.write_report(results, tmp_path / "BENCHMARKS.md", tmp_path / "BENCHMARKS.png", about=MACHINE, items=5000)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| 999,990 | 500,000 | 10,000 | 6 | 12 | 6 | 70 | 6 | **1.7** | 2.0 ✓ | 4g | 3.0 | 0.5 | unknown |" in text
    assert "| 9,999,990 | 5,000,000 | 100,000 |" in text and "| **15.0** | 12.0 ✗ |" in text
    assert "| 999,990 | completed | 0.2 | 1.0 | 1.7 | 10.0× |" in text
    assert "out of memory (passed the 20 GB cap) | 10.0 | 20.0 | 15.0 | reference did not finish |" in text
    assert "| 50,000,000 (requested) | – | – | – | – | – | – | – | failed after 30.0 | 60.0, driver ≤ 4 GB ✗ | 4g | 5.0 | – | abc1234, Java 25, AMD EPYC |" in text
    assert "- 50,000,000 rows: sampled by hand." in text
    assert (tmp_path / "BENCHMARKS.png").stat().st_size > 10_000


@pytest.mark.parametrize(("seconds", "driver_memory", "verdict"), [
    (3000.0, "4g", "60.0, driver ≤ 4 GB ✓"), (3000.0, "6144m", "60.0, driver ≤ 4 GB ✗"), (3700.0, "4g", "60.0, driver ≤ 4 GB ✗"),
])
def test_the_largest_target_needs_both_the_time_and_the_driver_memory(seconds, driver_memory, verdict):
    assert bench.target_verdict({"rows_requested": 50_000_000, "pipeline_seconds": seconds, "driver_memory": driver_memory}) == verdict
    assert bench.target_verdict({"rows_requested": 1_000_000, "pipeline_seconds": seconds}) == "2.0 ✗"
    assert bench.target_verdict({"rows_requested": 3_000_000, "pipeline_seconds": seconds}) == "–"


def test_results_of_separate_runs_are_merged_by_size(tmp_path):
    path = tmp_path / "results.json"
    bench.merge_results(path, [result(1_000_000, 100.0, None), result(10_000_000, 900.0, None)])
    merged = bench.merge_results(path, [result(1_000_000, 80.0, None)])
    assert [(r["rows_requested"], r["pipeline_seconds"]) for r in merged] == [(1_000_000, 80.0), (10_000_000, 900.0)]


def test_the_reference_cleans_like_the_ingest_and_recommends_for_every_segment(synthetic, tmp_path):
    pytest.importorskip("implicit")
    from devtools import reference

    outcome = reference.run_reference(str(synthetic.root / "raw" / "transactions"))
    assert outcome["clean_rows"] == synthetic.place("clean").count()
    assert outcome["customers"] == synthetic.place("clean").select("customer_id").distinct().count()
    # Ten unseen items for nearly every customer, and "also bought" lists for every item of every segment.
    assert outcome["recommendations"] >= 9 * outcome["customers"]
    assert {f"als fit segment {segment}" for segment in range(reference.SEGMENTS)} <= set(outcome["seconds"])


def test_a_java_child_of_the_jvm_is_not_counted_twice():
    # 1 the Python driver, 2 the JVM, 3 the JVM between fork and exec (a "java" sharing its memory), 4 a Python worker.
    tree = [(1, None), (2, 1), (3, 2), (4, 2)]
    kinds = {1: "python_driver", 2: "jvm", 3: "jvm", 4: "python_workers"}
    assert bench.classify_tree(tree, kinds.get) == {1: "python_driver", 2: "jvm", 4: "python_workers"}


def test_report_has_the_refit_with_reused_routes_per_size(tmp_path):
    reused = result(1_000_000, 100.0, None)
    reused["refit"] = {"seconds": 90.0, "peak_bytes": {"jvm": 2 * bench.GB},
                       "stage_seconds": {"ingest": 6.0, "segments": 12.0, "backtest": 6.0, "recommendations": 40.0, "report": 6.0}}
    validated = result(10_000_000, 900.0, None)
    validated["refit"] = {"seconds": 950.0, "peak_bytes": {}, "failed": "no earlier run in this output; see refit.log"}
    bench.write_report([reused, validated, result(50_000_000, 3000.0, None)], tmp_path / "BENCHMARKS.md", tmp_path / "BENCHMARKS.png",
                       about=MACHINE, items=5000)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    refits = text.split("## Refit with the routes just chosen")[1].split("## Against")[0]
    assert "| 999,990 | 6 | 12 | 6 | 40 | 6 | **1.5** | 2.0 | unknown |" in refits
    assert "| 9,999,990 | – | – | – | – | – | failed: no earlier run in this output; see refit.log | – | unknown |" in refits
    assert "49,999,990" not in refits


def test_cpu_is_counted_per_kind_of_work(tmp_path):
    spin = "import time\nend = time.process_time() + 1.5\nwhile time.process_time() < end: pass"
    measured = bench.run_measured([sys.executable, "-c", spin], log=tmp_path / "log")
    assert measured.status == 0
    assert 0.8 <= measured.cpu_seconds["python"] <= 2.5
    assert set(measured.cpu_seconds) == set(bench.CPU_KINDS)
    assert [bench.thread_kind(name) for name in ("Executor task l", "C2 CompilerThre", "C1 CompilerThre", "GC Thread#1", "Thread-12")] == [
        "tasks", "jit", "jit", "gc", "jvm_other"]


def test_report_says_where_the_cpu_went_for_the_rows_that_measured_it(tmp_path):
    measured = {**result(1_000_000, 100.0, None), "cpu_seconds": {"tasks": 90.0, "jit": 60.0, "gc": 5.0, "jvm_other": 20.0, "python": 15.0}}
    bench.write_report([measured, result(10_000_000, 900.0, None)], tmp_path / "BENCHMARKS.md", tmp_path / "BENCHMARKS.png",
                       about=MACHINE, items=5000)
    section = (tmp_path / "BENCHMARKS.md").read_text().split("## Where the pipeline's CPU went")[1].split("##")[0]
    assert "| 999,990 | 100 | 190 | 90 | 60 | 5 | 20 | 15 | unknown |" in section
    assert "9,999,990" not in section


def test_repeated_runs_report_the_median_run_every_time_and_the_highest_memory():
    def stages(customers):
        return {"ingest": {"rows_in": 1000, "rows_out": 900, "seconds": 1.0}, "segments": {"rows_out": customers, "seconds": 2.0},
                "recommendations": {"rows_out": 5000, "seconds": 3.0}}

    runs = [(bench.Measured(seconds=130.0, status=0, peak_bytes={"jvm": 4 * bench.GB}, cpu_seconds={"tasks": 90.0}), stages(11)),
            (bench.Measured(seconds=118.0, status=0, peak_bytes={"jvm": 3 * bench.GB, "python_workers": bench.GB}), stages(12)),
            (bench.Measured(seconds=122.0, status=0, peak_bytes={"jvm": 2 * bench.GB}, cpu_seconds={"tasks": 80.0}), stages(13))]
    summary = bench.median_run(runs)
    assert summary["pipeline_seconds"] == 122.0 and summary["cpu_seconds"] == {"tasks": 80.0} and summary["customers"] == 13
    assert summary["pipeline_runs"] == [118.0, 122.0, 130.0]
    assert summary["peak_bytes"] == {"jvm": 4 * bench.GB, "python_workers": bench.GB}
    assert bench.median_run(runs[:2])["pipeline_seconds"] == 118.0  # the lower median of an even number


def test_report_gives_the_range_of_repeated_runs_and_judges_the_median(tmp_path):
    repeated = {**result(1_000_000, 122.0, None), "pipeline_runs": [110.0, 122.0, 130.0]}
    bench.write_report([repeated, result(10_000_000, 900.0, None)], tmp_path / "BENCHMARKS.md", tmp_path / "BENCHMARKS.png",
                       about=MACHINE, items=5000)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| **2.0** (median of 3 runs, 110–130 s) | 2.0 ✗ |" in text
    assert "| **15.0** | 12.0 ✗ |" in text


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_a_repeat_that_is_not_a_whole_number_of_runs_is_refused(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        bench.positive_count(text)
