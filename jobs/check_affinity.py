"""Checks an affinity audience on the weeks after the run's as-of date, against random customers of the same buckets.

    python -m jobs.pipeline --input data/online_retail_ii.parquet --output before --as-of 2011-09-09 \
        --stages ingest,segments,recommendations
    python -m jobs.pipeline --input data/online_retail_ii.parquet --output all --stages ingest
    python -m jobs.check_affinity --output before --purchases-from all --days 92 --top 100

Reads the likeliest buyers and the segments of ``--output`` (run with ``--as-of``, so the
models never saw the days checked) and the purchases of ``--purchases-from`` (an ingest of
the whole log: the ingest of a run with ``--as-of`` sets later rows aside). The item is the
listed item most bought before the as-of date unless ``--item`` names one. Prints the members'
buying rate with its interval, the rate of as many random customers of the same buckets, and
the exact binomial p-value; ``--json`` writes them too. The arithmetic is ``routing.audience_check``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from routing.audience_check import check_affinity
from runtime import cli, layout, storage
from runtime.spark import build_session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory, run with --as-of before the days to check")
    parser.add_argument("--purchases-from", help="pipeline output whose ingest holds the days checked (default: --output)")
    parser.add_argument("--days", type=int, default=92, help="days after the as-of date to check (default 92)")
    parser.add_argument("--top", type=int, default=100, help="audience size: the top customers listed for the item (default 100)")
    parser.add_argument("--item", help="item id (default: the listed item most bought before the as-of date)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    cli.add_session_arguments(parser)
    args = parser.parse_args(argv)
    if args.days < 1 or args.top < 1:
        raise cli.JobError("--days and --top must be 1 or more")
    spark = build_session(cli.resolve_settings(args, app_name="segrec-check-affinity").spark)
    layout.fit_to_transactions(spark, args.output)
    recommendations = layout.open_stage(spark, args.output, layout.RECOMMENDATIONS)
    segments = layout.open_stage(spark, args.output, layout.SEGMENTS)
    as_of = dt.date.fromisoformat(storage.read_json(spark, storage.join(recommendations, "manifest.json"))["as_of"])
    purchases, _ = layout.read_transactions(spark, args.purchases_from or args.output)
    try:
        found = check_affinity(spark.read.parquet(storage.join(recommendations, "affinity")),
                               spark.read.parquet(storage.join(segments, "customers")), purchases,
                               as_of=as_of, days=args.days, top=args.top, item=args.item)
    except ValueError as error:
        raise cli.JobError(str(error)) from None
    low, high = found["members_rate_ci95"]
    print(f"item {found['item']}, {found['as_of']}..{found['end']}: the {found['members']:,} likeliest buyers bought it at "
          f"{found['members_rate']:.1%} [{low:.1%}, {high:.1%}]; as many random customers of the same buckets: "
          f"{found['random_same_buckets_rate']:.1%} (lift {found['lift']:.1f}x, p = {found['p_value']:.2g})")
    for segment, row in found["by_segment"].items():
        print(f"  {segment}: {row['members_buying']}/{row['members']} members bought it; {row['buyers']:,}/{row['customers']:,} of the bucket")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(found, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
