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
import datetime as dt
import sys

from jobs import cli, layout, storage
from jobs.config import build, load_config_file
from jobs.spark import SparkSettings, build_session
from segmentation import backtest
from segmentation.backtest import BacktestConfig
from segmentation.clv import CLVConfig
from segmentation.customers import segment_customers
from segmentation.rfm import SegmentationError
from segmentation.segments import SegmentConfig, segment_summary
from segmentation.windows import read_history

STAGE = layout.SEGMENTS
BACKTEST_STAGE = layout.BACKTEST


def run_segment(spark, output_uri: str, *, as_of: dt.date | None, clv_config: CLVConfig, segment_config: SegmentConfig) -> dict:
    purchases, returns = layout.read_transactions(spark, output_uri)
    history = read_history(purchases, as_of)
    history.check()
    as_of = history.as_of
    try:
        result = segment_customers(purchases, returns, as_of=as_of, clv_config=clv_config, segment_config=segment_config)
    except SegmentationError as error:
        raise SegmentationError(f"{error} (segmenting as of {history.describe_as_of()})") from None
    with storage.atomic_output(spark, layout.stage(output_uri, STAGE)) as staging:
        result.customers.write.parquet(storage.join(staging, "customers"))
        customers = spark.read.parquet(storage.join(staging, "customers"))
        summary_rows = segment_summary(customers)
        summary_rows.write.parquet(storage.join(staging, "segments"))
        result.model.save(storage.join(staging, "model"))
        storage.FileSystem(spark).write_text(storage.join(staging, "clv.json"), result.clv.to_json())
        sizes = {row["segment"]: row["customers"] for row in spark.read.parquet(storage.join(staging, "segments")).collect()}
        summary = {
            "as_of": as_of.isoformat(),
            "customers": sum(sizes.values()),
            "segments": sizes,
            "silhouette": result.model.silhouette,
            "clv_model": result.clv.model,
            "seasonal_index": result.clv.seasonal_index,
            "frequency_spend_correlation": result.clv.frequency_spend_correlation,
            "notes": result.clv.notes,
            "horizon_months": clv_config.horizon_months,
            "features": list(segment_config.features),
        }
        storage.write_json(spark, storage.join(staging, "summary.json"), summary)
    return summary


def run_backtest(spark, output_uri: str, *, as_of: dt.date | None, config: BacktestConfig,
                 clv_config: CLVConfig, segment_config: SegmentConfig) -> dict:
    """The backtest's results, or ``{"skipped": True, ...}`` with the reason when the history is too short for it."""
    purchases, returns = layout.read_transactions(spark, output_uri)
    history = read_history(purchases, as_of)
    history.check()
    result = backtest.backtest_history(purchases, returns, history=history, config=config, clv_config=clv_config,
                                       segment_config=segment_config)
    with storage.atomic_output(spark, layout.stage(output_uri, BACKTEST_STAGE)) as staging:
        storage.write_json(spark, storage.join(staging, "backtest.json"), result)
    return result


def format_summary(summary: dict) -> str:
    sizes = ", ".join(f"{label} {count:,}" for label, count in sorted(summary["segments"].items()))
    lines = [f"{summary['customers']:,} customers as of {summary['as_of']}: {sizes}; silhouette {summary['silhouette']:.3f}"]
    return "\n".join(lines + [f"note: {note}" for note in summary["notes"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest)")
    parser.add_argument("--backtest", action="store_true", help="run the CLV backtest instead, into <output>/backtest")
    cli.add_segment_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = load_config_file(args.config)
    clv_config, segment_config, backtest_config = cli.segment_configs(args, settings)
    spark = build_session(build(SparkSettings, {"app_name": "segrec-segment"}, settings.get("spark"), {"master": args.master}))
    layout.fit_to_transactions(spark, args.output)
    if args.backtest:
        result = run_backtest(spark, args.output, as_of=args.as_of, config=backtest_config, clv_config=clv_config, segment_config=segment_config)
        print(f"CLV backtest skipped: {result['window']['reason']}" if result["skipped"] else backtest.format_backtest(result))
    else:
        print(format_summary(run_segment(spark, args.output, as_of=args.as_of, clv_config=clv_config, segment_config=segment_config)))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
