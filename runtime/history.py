"""Run history: each pipeline run's customers kept under its run id, a pointer to the current run, and migration between runs.

    <output>/runs/<run_id>/customers/   customer_id, segment, lifecycle, total_spend, clv as of the run's date
    <output>/runs/<run_id>/run.json     the run's run.json
    <output>/runs/CURRENT               the current run's id (written beside itself and renamed into place)

The stage directories hold the current run's full outputs, which publishing takes; the
history keeps of each run what comparing runs needs, so it stays small. Runs beyond
``HistoryConfig.keep_runs`` are pruned, oldest first. Erasure rewrites the history too.
"""

from __future__ import annotations

import dataclasses

from runtime import layout, storage
from segmentation import columns as C

RUNS = layout.RUNS
CURRENT = "CURRENT"
KEPT_COLUMNS = (C.CUSTOMER_ID, C.SEGMENT, C.LIFECYCLE, C.TOTAL_SPEND, C.CLV)
NEW, GONE = "(new)", "(gone)"  # the migration's "from" for customers a run did not know, and "to" for those it lost


class HistoryError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class HistoryConfig:
    keep_runs: int = 12  # runs kept in the history, the current one included

    def __post_init__(self):
        if self.keep_runs < 2:
            raise HistoryError(f"history.keep_runs must be 2 or more (migration compares two runs), got {self.keep_runs}")


def run_directory(output_uri: str, run_id: str) -> str:
    return storage.join(output_uri, RUNS, run_id)


def archive_run(spark, output_uri: str, run: dict, config: HistoryConfig = HistoryConfig()) -> list[str]:
    """Keep ``run``'s customers under its id, point CURRENT at it and prune the oldest runs; the run ids pruned."""
    segments = layout.open_stage(spark, output_uri, layout.SEGMENTS)
    customers = spark.read.parquet(storage.join(segments, "customers")).select(*KEPT_COLUMNS)
    with storage.atomic_output(spark, run_directory(output_uri, run["run_id"])) as staging:
        customers.write.parquet(storage.join(staging, "customers"))
        storage.write_json(spark, storage.join(staging, "run.json"), run)
    files = storage.FileSystem(spark)
    pointer = storage.join(output_uri, RUNS, CURRENT)
    files.write_text(pointer + ".partial", run["run_id"] + "\n")
    if files.exists(pointer):
        files.delete(pointer)
    files.rename(pointer + ".partial", pointer)
    pruned = [entry["run_id"] for entry in runs(spark, output_uri)[config.keep_runs:]]
    for run_id in pruned:
        files.delete(run_directory(output_uri, run_id))
    return pruned


def runs(spark, output_uri: str) -> list[dict]:
    """The kept runs' run.json, newest first (by start time)."""
    files = storage.FileSystem(spark)
    root = storage.join(output_uri, RUNS)
    if not files.exists(root):
        return []
    found = [storage.read_json(spark, storage.join(root, name, "run.json")) for name in files.list_names(root)
             if not name.startswith(".") and name != CURRENT and files.exists(storage.join(root, name, "run.json"))]
    return sorted(found, key=lambda run: run["started_at"], reverse=True)


def current_and_previous(spark, output_uri: str) -> tuple[dict | None, dict | None]:
    """The current run (CURRENT's) and the newest run before it, each None when there is none."""
    files = storage.FileSystem(spark)
    pointer = storage.join(output_uri, RUNS, CURRENT)
    if not files.exists(pointer):
        return None, None
    current_id = files.read_text(pointer).strip()
    kept = runs(spark, output_uri)
    current = next((run for run in kept if run["run_id"] == current_id), None)
    if current is None:
        raise HistoryError(f"{pointer} names run {current_id}, which the history does not hold")
    earlier = [run for run in kept if run["started_at"] < current["started_at"]]
    return current, (earlier[0] if earlier else None)


def migration(spark, output_uri: str, before: dict, after: dict):
    """from_segment, to_segment, customers, revenue: how customers moved between the segments of ``before`` and ``after``
    (NEW for those ``before`` did not know, GONE for those ``after`` lost); revenue is what they had spent by ``after``
    (by ``before`` for the gone)."""
    from pyspark.sql import functions as F

    def read(run: dict, prefix: str):
        frame = spark.read.parquet(storage.join(run_directory(output_uri, run["run_id"]), "customers"))
        return frame.select(C.CUSTOMER_ID, F.col(C.SEGMENT).alias(f"{prefix}_segment"), F.col(C.TOTAL_SPEND).alias(f"{prefix}_spend"))

    moved = read(before, "from").join(read(after, "to"), C.CUSTOMER_ID, "full_outer")
    return moved.groupBy(F.coalesce("from_segment", F.lit(NEW)).alias("from_segment"),
                         F.coalesce("to_segment", F.lit(GONE)).alias("to_segment")).agg(
        F.count(F.lit(1)).alias("customers"), F.round(F.sum(F.coalesce("to_spend", "from_spend")), 2).alias("revenue"))
