"""The report stage: the segment report's charts and page, published atomically."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from runtime import layout, storage
from segmentation import charts
from segmentation.report import customer_sample, distribution_stats, render_html, top_items_per_segment

STAGE = layout.REPORT


def build_charts(spark, output_uri: str) -> tuple[list[charts.Chart], dict, pd.DataFrame, dict]:
    segments_uri = layout.open_stage(spark, output_uri, layout.SEGMENTS)
    backtest_uri = layout.open_stage(spark, output_uri, layout.BACKTEST)
    summary = storage.read_json(spark, storage.join(segments_uri, "summary.json"))
    backtest = storage.read_json(spark, storage.join(backtest_uri, "backtest.json"))
    customers = spark.read.parquet(storage.join(segments_uri, "customers"))
    table = spark.read.parquet(storage.join(segments_uri, "segments")).toPandas()
    purchases, _ = layout.read_transactions(spark, output_uri)
    as_of = dt.date.fromisoformat(summary["as_of"])
    drawn = [
        charts.segment_sizes(table),
        charts.distributions(distribution_stats(customers)),
        charts.frequency_vs_spend(customer_sample(customers, summary["customers"])),
        *([] if backtest["skipped"] else [charts.clv_backtest(pd.DataFrame(backtest["by_frequency"]), backtest)]),
        charts.top_items(top_items_per_segment(purchases, customers, as_of)),
    ]
    return drawn, summary, table, backtest


def run_report(spark, output_uri: str) -> list[str]:
    drawn, summary, table, backtest = build_charts(spark, output_uri)
    fs = storage.FileSystem(spark)
    with storage.atomic_output(spark, layout.stage(output_uri, STAGE)) as staging:
        for chart in drawn:
            fs.write_bytes(storage.join(staging, f"{chart.name}.png"), chart.png)
        fs.write_text(storage.join(staging, "index.html"), render_html(drawn, summary, table, backtest))
    return [chart.name for chart in drawn]
