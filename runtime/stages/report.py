"""The report stage: the segment report's charts and page, published atomically."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from runtime import layout, storage
from segmentation import charts
from segmentation.report import ReportConfig, customer_sample, distribution_stats, render_html, top_items_per_segment

STAGE = layout.REPORT


def build_charts(spark, output_uri: str, config: ReportConfig = ReportConfig()) -> tuple[list[charts.Chart], dict, pd.DataFrame, dict]:
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
        charts.distributions(distribution_stats(customers), config.currency),
        charts.frequency_vs_spend(customer_sample(customers, summary["customers"]), config.currency),
        *([] if backtest["skipped"] else [charts.clv_backtest(pd.DataFrame(backtest["by_frequency"]), backtest)]),
        charts.top_items(top_items_per_segment(purchases, customers, as_of)),
    ]
    return drawn, summary, table, backtest


def run_report(spark, output_uri: str, config: ReportConfig = ReportConfig()) -> list[str]:
    """Charts, the page and report.json (the currency, which publishing hands to the web app)."""
    drawn, summary, table, backtest = build_charts(spark, output_uri, config)
    fs = storage.FileSystem(spark)
    ingest_summary = storage.join(layout.stage(output_uri, layout.INGEST), "summary.json")
    source = storage.read_json(spark, ingest_summary).get("input", "") if fs.exists(ingest_summary) else ""
    with storage.atomic_output(spark, layout.stage(output_uri, STAGE)) as staging:
        for chart in drawn:
            fs.write_bytes(storage.join(staging, f"{chart.name}.png"), chart.png)
        fs.write_text(storage.join(staging, "index.html"), render_html(drawn, summary, table, backtest, config=config,
                                                                       source=source.rsplit("/", 1)[-1]))
        storage.write_json(spark, storage.join(staging, "report.json"), {"currency": config.currency})
    return [chart.name for chart in drawn]
