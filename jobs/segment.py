"""Value segments: RFM and CLV per customer, K-means high/mid/low buckets; or the CLV backtest.

    python -m jobs.segment --output output                     # reads output/ingest, writes output/segments
    python -m jobs.segment --output output --backtest --calibration-end 2011-09-08   # writes output/backtest

Outputs under ``<output>/segments/`` (published atomically, as one directory):
``customers/`` (one row per customer), ``segments/`` (summary per segment),
``model/`` (the fitted K-means pipeline, for customers it has never seen),
``clv.json`` (fitted CLV parameters and notes) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import sys

from runtime import cli, layout
from runtime.spark import build_session
from runtime.stages.segments import format_summary, run_backtest, run_segment
from segmentation.backtest import format_backtest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest)")
    parser.add_argument("--backtest", action="store_true", help="run the CLV backtest instead, into <output>/backtest")
    cli.add_segment_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = cli.resolve_settings(args, app_name="segrec-segment")
    spark = build_session(settings.spark)
    layout.fit_to_transactions(spark, args.output)
    if args.backtest:
        result = run_backtest(spark, args.output, as_of=args.as_of, settings=settings)
        print(f"CLV backtest skipped: {result['window']['reason']}" if result["skipped"] else format_backtest(result))
    else:
        print(format_summary(run_segment(spark, args.output, as_of=args.as_of, settings=settings)))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
