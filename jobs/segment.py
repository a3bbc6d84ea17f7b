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
from dataclasses import dataclass

from jobs import cli, ingest, storage
from jobs.config import build, load_config_file
from jobs.spark import SparkSettings, build_session, fit_to_input
from segmentation import backtest, rfm
from segmentation.clv import TRANSACTION_MODELS, CLVConfig
from segmentation.customers import segment_customers
from segmentation.segments import SegmentConfig, segment_summary

STAGE = "segments"
BACKTEST_STAGE = "backtest"


@dataclass(frozen=True)
class BacktestConfig:
    calibration_end: dt.date | None = None  # default: holdout_days before the as-of date
    holdout_days: int = 92
    models: tuple[str, ...] = TRANSACTION_MODELS
    top_share: float = 0.2


def read_transactions(spark, output_uri: str):
    stage = storage.open_stage(spark, storage.join(output_uri, ingest.STAGE), produced_by="the ingest stage (jobs.ingest)")
    return spark.read.parquet(storage.join(stage, ingest.CLEAN)), spark.read.parquet(storage.join(stage, ingest.RETURNS))


def fit_to_transactions(spark, output_uri: str) -> None:
    """For a stage run on its own: the session sized to the ingest's output, as the pipeline sizes it to its input."""
    fit_to_input(spark, storage.join(output_uri, ingest.STAGE))


def run_segment(spark, output_uri: str, *, as_of: dt.date | None, clv_config: CLVConfig, segment_config: SegmentConfig) -> dict:
    purchases, returns = read_transactions(spark, output_uri)
    as_of = as_of or rfm.default_as_of(purchases)
    result = segment_customers(purchases, returns, as_of=as_of, clv_config=clv_config, segment_config=segment_config)
    with storage.atomic_output(spark, storage.join(output_uri, STAGE)) as staging:
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
    purchases, returns = read_transactions(spark, output_uri)
    holdout_end = as_of or rfm.default_as_of(purchases)
    calibration_end = config.calibration_end or holdout_end - dt.timedelta(days=config.holdout_days + 1)
    result = backtest.run_backtest(
        purchases, returns, calibration_end=calibration_end, holdout_end=holdout_end,
        clv_config=clv_config, segment_config=segment_config, models=config.models, top_share=config.top_share,
    )
    with storage.atomic_output(spark, storage.join(output_uri, BACKTEST_STAGE)) as staging:
        storage.write_json(spark, storage.join(staging, "backtest.json"), result)
    return result


def format_summary(summary: dict) -> str:
    sizes = ", ".join(f"{label} {count:,}" for label, count in sorted(summary["segments"].items()))
    lines = [f"{summary['customers']:,} customers as of {summary['as_of']}: {sizes}; silhouette {summary['silhouette']:.3f}"]
    return "\n".join(lines + [f"note: {note}" for note in summary["notes"]])


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--horizon-months", type=int, help="CLV horizon in months (default 12)")
    parser.add_argument("--discount-rate", type=float, help="monthly discount rate for CLV (default 0.01)")
    parser.add_argument("--clv-model", choices=TRANSACTION_MODELS, help="purchase model (default bgnbd)")
    parser.add_argument("--k", type=int, help="number of segments (default 3: high, mid, low)")
    parser.add_argument("--seed", type=int, help="K-means seed (default 42)")
    parser.add_argument("--calibration-end", type=cli.as_of_date, help="backtest: last day of the calibration period")
    parser.add_argument("--holdout-days", type=int, help="backtest: hold-out length when --calibration-end is not given (default 92)")


def segment_configs(args: argparse.Namespace, settings: dict) -> tuple[CLVConfig, SegmentConfig, BacktestConfig]:
    """Configs from the file and the segment flags (a job without those flags just gets the file's settings)."""
    flag = vars(args).get
    clv_config = build(CLVConfig, settings.get("clv"), {
        "horizon_months": flag("horizon_months"), "discount_rate": flag("discount_rate"), "model": flag("clv_model"),
    })
    segment_config = build(SegmentConfig, settings.get("segments"), {"k": flag("k"), "seed": flag("seed")})
    backtest_config = build(BacktestConfig, settings.get("backtest"), {
        "calibration_end": flag("calibration_end"), "holdout_days": flag("holdout_days"),
    })
    return clv_config, segment_config, backtest_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads <output>/ingest)")
    parser.add_argument("--backtest", action="store_true", help="run the CLV backtest instead, into <output>/backtest")
    add_segment_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = load_config_file(args.config)
    clv_config, segment_config, backtest_config = segment_configs(args, settings)
    spark = build_session(build(SparkSettings, {"app_name": "segrec-segment"}, settings.get("spark"), {"master": args.master}))
    fit_to_transactions(spark, args.output)
    if args.backtest:
        result = run_backtest(spark, args.output, as_of=args.as_of, config=backtest_config, clv_config=clv_config, segment_config=segment_config)
        print(backtest.format_backtest(result))
    else:
        print(format_summary(run_segment(spark, args.output, as_of=args.as_of, clv_config=clv_config, segment_config=segment_config)))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
