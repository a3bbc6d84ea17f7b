"""The pipeline on a real Spark standalone cluster (master + worker on 127.0.0.1) equals the local run."""

from devtools import cluster_test, compare


def test_the_project_zip_holds_every_spark_side_module_and_not_the_web_app(tmp_path):
    import zipfile

    names = zipfile.ZipFile(cluster_test.package_project(tmp_path / "segrec.zip")).namelist()
    assert {"jobs/pipeline.py", "runtime/pipeline.py", "transactions/ingest.py", "cf/als.py", "coldstart/popularity.py", "routing/model.py",
            "segmentation/clv.py"} <= set(names)
    assert not any(name.startswith(("webapp/", "tests/")) for name in names)


def test_output_comparison_finds_a_changed_row_a_missing_table_and_a_changed_summary(tmp_path):
    import json

    import pandas as pd

    for run, score in (("local", 0.5), ("cluster", 0.5000001)):
        (tmp_path / run / "t").mkdir(parents=True)
        pd.DataFrame({"customer_id": ["a", "b"], "score": [score, 1.0]}).to_parquet(tmp_path / run / "t" / "part-0.parquet")
        (tmp_path / run / "summary.json").write_text(json.dumps({"rows": 2, "created_at": run}))
    assert set(compare.compare_outputs(tmp_path / "local", tmp_path / "cluster").values()) == {None}

    pd.DataFrame({"customer_id": ["a", "c"], "score": [0.5, 1.0]}).to_parquet(tmp_path / "cluster" / "t" / "part-0.parquet")
    (tmp_path / "local" / "extra").mkdir()
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "local" / "extra" / "part-0.parquet")
    (tmp_path / "cluster" / "summary.json").write_text(json.dumps({"rows": 3, "created_at": "cluster"}))
    results = compare.compare_outputs(tmp_path / "local", tmp_path / "cluster", names=("local", "cluster"))
    assert "customer_id differs in 1 rows" in results["t"]
    assert results["extra"] == "only in the local run"
    assert results["summary.json"] == "/rows: 2 vs 3"


def test_pipeline_on_a_standalone_cluster_equals_the_local_run(pipeline_run, cluster_run):
    cluster_output = cluster_run.result()
    results = compare.compare_outputs(pipeline_run, cluster_output)
    different = {table: problem for table, problem in results.items() if problem is not None}
    assert not different
    # Every stage's outputs were compared, not just whatever happened to exist.
    assert {"ingest/clean", "segments/customers", "recommendations/recommendations", "backtest/backtest.json"} <= set(results)
    # run_on_cluster itself refuses a run the master never saw; the executor ran on the worker.
    assert "Asked to launch executor" in (cluster_output.parent / "logs" / "worker.log").read_text()
