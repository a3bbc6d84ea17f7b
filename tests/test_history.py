"""Run history: runs kept under their ids with a pointer to the current one, pruned, compared, and published."""

import json
import sqlite3
from contextlib import closing

import pandas as pd
import pytest

from runtime import history, layout, storage


def write_segments(spark, output, customers: dict[str, tuple[str, float]]):
    """A segments stage holding ``customers`` (id -> segment, total spend)."""
    rows = pd.DataFrame([{"customer_id": customer, "segment": segment, "lifecycle": "active", "total_spend": spend, "clv": spend / 2}
                         for customer, (segment, spend) in customers.items()])
    with storage.atomic_output(spark, layout.stage(str(output), layout.SEGMENTS)) as staging:
        spark.createDataFrame(rows).write.parquet(storage.join(staging, "customers"))


def run(run_id: str, as_of: str, started_at: str) -> dict:
    return {"run_id": run_id, "as_of": as_of, "started_at": started_at, "stages": [{"stage": "segments", "rows_out": 0}]}


BEFORE = {"a": ("high", 100.0), "b": ("high", 80.0), "c": ("mid", 40.0), "d": ("low", 5.0)}
AFTER = {"a": ("high", 150.0), "b": ("mid", 90.0), "c": ("mid", 45.0), "d": ("low", 5.0), "e": ("low", 12.0)}


def test_runs_are_kept_pointed_at_compared_and_pruned(spark, tmp_path):
    output = tmp_path / "out"
    write_segments(spark, output, BEFORE)
    assert history.archive_run(spark, str(output), run("r1", "2011-11-10", "2026-01-01T00:00:00")) == []
    write_segments(spark, output, AFTER)
    history.archive_run(spark, str(output), run("r2", "2011-12-10", "2026-02-01T00:00:00"), history.HistoryConfig(keep_runs=2))
    assert (output / "runs" / "CURRENT").read_text().strip() == "r2"
    current, previous = history.current_and_previous(spark, str(output))
    assert (current["run_id"], previous["run_id"]) == ("r2", "r1")

    moved = history.migration(spark, str(output), previous, current).toPandas().set_index(["from_segment", "to_segment"])
    # the pandas reference: each customer's segment before and after, new ones from "(new)"; revenue as of the later run
    joined = pd.DataFrame(BEFORE, index=["from_segment", "from_spend"]).T.join(
        pd.DataFrame(AFTER, index=["to_segment", "to_spend"]).T, how="outer").fillna({"from_segment": history.NEW})
    expected = joined.groupby(["from_segment", "to_segment"]).agg(customers=("to_spend", "size"), revenue=("to_spend", "sum"))
    assert moved["customers"].to_dict() == expected["customers"].to_dict()
    assert moved["revenue"].to_dict() == pytest.approx(expected["revenue"].astype(float).to_dict())

    # A third run with keep_runs 2 prunes the oldest; the pointer always names the newest
    assert history.archive_run(spark, str(output), run("r3", "2012-01-10", "2026-03-01T00:00:00"), history.HistoryConfig(keep_runs=2)) == ["r1"]
    assert [kept["run_id"] for kept in history.runs(spark, str(output))] == ["r3", "r2"]
    assert not (output / "runs" / "r1").exists()


def test_keeping_fewer_than_two_runs_is_refused():
    with pytest.raises(history.HistoryError, match="history.keep_runs must be 2 or more"):
        history.HistoryConfig(keep_runs=1)


def test_the_pipeline_keeps_its_run_and_publishing_shows_the_migration(spark, pipeline_run, tmp_path):
    from runtime.stages.publish import publish

    run_id = json.loads((pipeline_run / "run.json").read_text())["run_id"]
    assert (pipeline_run / "runs" / "CURRENT").read_text().strip() == run_id
    kept = pd.read_parquet(pipeline_run / "runs" / run_id / "customers")
    assert list(kept.columns) == list(history.KEPT_COLUMNS)
    assert len(kept) == len(pd.read_parquet(pipeline_run / layout.SEGMENTS / "customers"))

    # A copy of the output with an earlier run in its history: publishing shows both runs and the migration between them
    import shutil

    output = tmp_path / "out"
    shutil.copytree(pipeline_run, output)
    earlier = kept.assign(segment=kept["segment"].where(kept.index % 5 != 0, "low")).iloc[10:]  # some moved, ten are new since
    earlier_run = {**run("earlier", "2011-11-12", "2000-01-01T00:00:00"), "stages": [{"stage": "segments", "rows_out": len(earlier)}]}
    with storage.atomic_output(spark, history.run_directory(str(output), "earlier")) as staging:
        spark.createDataFrame(earlier).write.parquet(storage.join(staging, "customers"))
        storage.write_json(spark, storage.join(staging, "run.json"), earlier_run)
    publish(spark, str(output), str(output / "store.sqlite"))
    with closing(sqlite3.connect(output / "store.sqlite")) as store:
        runs = store.execute("SELECT run_id, current, customers FROM runs ORDER BY started_at").fetchall()
        moved = pd.read_sql("SELECT * FROM migration", store)
        meta = dict(store.execute("SELECT key, value FROM meta").fetchall())
        assert store.execute("SELECT COUNT(*) FROM charts WHERE name = 'migration'").fetchone()[0] == 1
    assert runs == [("earlier", 0, len(earlier)), (run_id, 1, len(kept))]
    assert meta["previous_run_id"] == "earlier" and meta["previous_as_of"] == "2011-11-12"
    assert moved["customers"].sum() == len(kept) and moved.loc[moved["from_segment"] == history.NEW, "customers"].sum() == 10
    assert moved["revenue"].sum() == pytest.approx(kept["total_spend"].sum(), rel=1e-6)
