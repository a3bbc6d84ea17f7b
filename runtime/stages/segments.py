"""The segments stage (RFM, CLV and value segments as of a date) and the CLV backtest."""

from __future__ import annotations

import datetime as dt

from cf.base import in_parallel
from runtime import layout, storage
from runtime.config import Settings
from segmentation import backtest
from segmentation.customers import segment_customers
from segmentation.lifecycle import STATES, lifecycle_summary, with_lifecycle
from segmentation.rfm import SegmentationError
from segmentation.segments import segment_summary
from segmentation.windows import read_history

STAGE = layout.SEGMENTS
BACKTEST_STAGE = layout.BACKTEST


def run_segment(spark, output_uri: str, *, as_of: dt.date | None, settings: Settings) -> dict:
    clv_config, segment_config = settings.clv, settings.segments
    purchases, returns = layout.read_transactions(spark, output_uri)
    history = read_history(purchases, as_of)
    history.check()
    as_of = history.as_of
    try:
        result = segment_customers(purchases, returns, as_of=as_of, clv_config=clv_config, segment_config=segment_config)
    except SegmentationError as error:
        raise SegmentationError(f"{error} (segmenting as of {history.describe_as_of()})") from None
    with storage.atomic_output(spark, layout.stage(output_uri, STAGE)) as staging:
        def write_customers_and_summaries() -> None:
            with_lifecycle(result.customers, as_of=as_of, config=settings.lifecycle).write.parquet(storage.join(staging, "customers"))
            customers = spark.read.parquet(storage.join(staging, "customers"))
            in_parallel({"segments": lambda: segment_summary(customers).write.parquet(storage.join(staging, "segments")),
                         "lifecycle": lambda: lifecycle_summary(customers).write.parquet(storage.join(staging, "lifecycle"))})

        # The model is written beside the tables (see in_parallel).
        in_parallel({"customers": write_customers_and_summaries, "model": lambda: result.model.save(storage.join(staging, "model"))})
        lifecycle = {(row["lifecycle"], row["segment"]): row for row in spark.read.parquet(storage.join(staging, "lifecycle")).collect()}
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
            "lifecycle": {state: {"customers": sum(row["customers"] for (name, _), row in lifecycle.items() if name == state),
                                  "revenue": round(sum(row["revenue"] or 0.0 for (name, _), row in lifecycle.items() if name == state), 2)}
                          for state in STATES},
            "lifecycle_explained": settings.lifecycle.explain(),
        }
        storage.write_json(spark, storage.join(staging, "summary.json"), summary)
    return summary


def run_backtest(spark, output_uri: str, *, as_of: dt.date | None, settings: Settings) -> dict:
    """The backtest's results, or ``{"skipped": True, ...}`` with the reason when the history is too short for it."""
    purchases, returns = layout.read_transactions(spark, output_uri)
    history = read_history(purchases, as_of)
    history.check()
    result = backtest.backtest_history(purchases, returns, history=history, config=settings.backtest, clv_config=settings.clv,
                                       segment_config=settings.segments)
    with storage.atomic_output(spark, layout.stage(output_uri, BACKTEST_STAGE)) as staging:
        storage.write_json(spark, storage.join(staging, "backtest.json"), result)
    return result


def format_summary(summary: dict) -> str:
    sizes = ", ".join(f"{label} {count:,}" for label, count in sorted(summary["segments"].items()))
    lines = [f"{summary['customers']:,} customers as of {summary['as_of']}: {sizes}; silhouette {summary['silhouette']:.3f}"]
    return "\n".join(lines + [f"note: {note}" for note in summary["notes"]])
