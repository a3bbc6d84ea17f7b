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
from segmentation import backtest
from segmentation.clv import TRANSACTION_MODELS, CLVConfig
from segmentation.customers import segment_customers
from segmentation.rfm import SegmentationError
from segmentation.segments import SegmentConfig, segment_summary
from segmentation.windows import History, Window, WindowError, WindowRule, choose_window, read_history

STAGE = "segments"
BACKTEST_STAGE = "backtest"


@dataclass(frozen=True)
class BacktestConfig:
    calibration_end: dt.date | None = None  # default: the hold-out is the last holdout_days before the as-of date
    holdout_days: int | None = None  # None: holdout_share of the history before the as-of date, at most max_holdout_days
    holdout_share: float = 0.25
    max_holdout_days: int = 92
    min_holdout_days: int = 14  # a shorter hold-out is skipped: the backtest is a report, nothing depends on it
    models: tuple[str, ...] = TRANSACTION_MODELS
    top_share: float = 0.2

    def rule(self) -> WindowRule:
        return WindowRule(name="backtest hold-out", flag="--holdout-days", share=self.holdout_share,
                          max_days=self.max_holdout_days, min_days=self.min_holdout_days)


def read_transactions(spark, output_uri: str):
    stage = storage.open_stage(spark, storage.join(output_uri, ingest.STAGE), produced_by="the ingest stage (jobs.ingest)")
    return spark.read.parquet(storage.join(stage, ingest.CLEAN)), spark.read.parquet(storage.join(stage, ingest.RETURNS))


def fit_to_transactions(spark, output_uri: str) -> None:
    """For a stage run on its own: the session sized to the ingest's output, as the pipeline sizes it to its input."""
    fit_to_input(spark, storage.join(output_uri, ingest.STAGE))


def run_segment(spark, output_uri: str, *, as_of: dt.date | None, clv_config: CLVConfig, segment_config: SegmentConfig) -> dict:
    purchases, returns = read_transactions(spark, output_uri)
    history = read_history(purchases, as_of)
    history.check()
    as_of = history.as_of
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


def holdout_window(history: History, config: BacktestConfig) -> Window:
    """The backtest's hold-out: what ``--calibration-end`` or ``--holdout-days`` say, else chosen from the history."""
    rule = config.rule()
    if config.calibration_end is None:
        return choose_window(history, rule, days=config.holdout_days)
    days = (history.as_of - config.calibration_end).days - 1
    if days < 1:
        raise WindowError(f"--calibration-end {config.calibration_end} leaves no hold-out before {history.describe_as_of()}: "
                          "give an earlier --calibration-end")
    if config.calibration_end < history.first_purchase:
        raise WindowError(f"--calibration-end {config.calibration_end} is before the first purchase ({history.first_purchase}): "
                          "give a later one, or leave it out and segrec chooses a hold-out from the history")
    return Window(rule.name, history.as_of, days, "set by --calibration-end")


def run_backtest(spark, output_uri: str, *, as_of: dt.date | None, config: BacktestConfig,
                 clv_config: CLVConfig, segment_config: SegmentConfig) -> dict:
    """The backtest's results, or ``{"skipped": True, ...}`` with the reason when the history is too short for it."""
    purchases, returns = read_transactions(spark, output_uri)
    history = read_history(purchases, as_of)
    history.check()
    window = holdout_window(history, config)
    result = {"skipped": True, "notes": []}
    if not window.skipped:
        calibration_end = window.start - dt.timedelta(days=1)
        try:
            result = {"skipped": False, **backtest.run_backtest(
                purchases, returns, calibration_end=calibration_end, holdout_end=window.end,
                clv_config=clv_config, segment_config=segment_config, models=config.models, top_share=config.top_share,
            )}
        except SegmentationError as error:
            # The calibration period is shorter than the history the segments learn from: it may lack what they need.
            window = Window(window.name, window.end, None,
                            f"{window.reason}, but the calibration period up to {calibration_end} cannot be modelled: {error}")
    result["window"] = window.as_dict()
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
    parser.add_argument("--holdout-days", type=int, help="backtest: hold-out length when --calibration-end is not given "
                        "(default: a quarter of the history before the as-of date, at most 92; skipped below 14)")


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
        print(f"CLV backtest skipped: {result['window']['reason']}" if result["skipped"] else backtest.format_backtest(result))
    else:
        print(format_summary(run_segment(spark, args.output, as_of=args.as_of, clv_config=clv_config, segment_config=segment_config)))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
