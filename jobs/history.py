"""The runs a pipeline output keeps, and how customers moved between the segments of the current run and the one before.

    python -m jobs.pipeline --input data/online_retail_ii.parquet --output out --as-of 2011-11-10 --stages ingest,segments
    python -m jobs.pipeline --input data/online_retail_ii.parquet --output out --as-of 2011-12-10 --stages ingest,segments
    python -m jobs.history --output out

Prints each kept run, the migration table (customers and what they have spent, from each
segment to each other) and the current run's lifecycle states. The runs are kept by every
pipeline run that computes segments (``runtime.history``); publishing puts the same in the app.
"""

from __future__ import annotations

import argparse
import sys

from runtime import cli, history, layout, storage
from runtime.spark import build_session
from segmentation.lifecycle import STATES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory")
    cli.add_session_arguments(parser)
    args = parser.parse_args(argv)
    spark = build_session(cli.resolve_settings(args, app_name="segrec-history").spark)
    kept = history.runs(spark, args.output)
    if not kept:
        raise cli.JobError(f"{args.output} keeps no runs: run jobs.pipeline with the segments stage first")
    current, previous = history.current_and_previous(spark, args.output)
    for run in kept:
        print(f"run {run['run_id']} as of {run['as_of']}, started {run['started_at']}" + (" (current)" if run["run_id"] == current["run_id"] else ""))
    if previous is None:
        print("one run only: no migration yet")
    else:
        print(f"\nfrom {previous['as_of']} (rows) to {current['as_of']}: customers (spent so far)")
        moved = history.migration(spark, args.output, previous, current).orderBy("from_segment", "to_segment").collect()
        for row in moved:
            print(f"  {row['from_segment']:>8} -> {row['to_segment']:<8} {row['customers']:>7,}  ({row['revenue']:,.0f})")
    summary = storage.read_json(spark, storage.join(layout.open_stage(spark, args.output, layout.SEGMENTS), "summary.json"))
    print(f"\nlifecycle as of {summary['as_of']}: customers (spent so far)")
    for state in STATES:
        figures = summary["lifecycle"][state]
        print(f"  {state:>8} {figures['customers']:>7,}  ({figures['revenue']:,.0f})  {summary['lifecycle_explained'][state]}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
