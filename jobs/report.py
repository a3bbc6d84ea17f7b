"""The segment report for marketers: one HTML file that opens from disk, plus the chart PNGs.

    python -m jobs.report --output output      # reads output/segments, output/backtest, output/ingest

Writes ``<output>/report/index.html`` (images embedded) and ``<output>/report/*.png``;
the tables and the page are made in ``segmentation.report``, the charts in ``segmentation.charts``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import pandas as pd

from jobs import cli, layout, storage
from jobs.config import build, load_config_file
from jobs.spark import SparkSettings, build_session
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads segments, backtest, ingest)")
    parser.add_argument("--config", help="TOML or JSON file with settings per stage")
    parser.add_argument("--master", help="Spark master when not run through spark-submit")
    args = parser.parse_args(argv)
    settings = load_config_file(args.config)
    spark = build_session(build(SparkSettings, {"app_name": "segrec-report"}, settings.get("spark"), {"master": args.master}))
    layout.fit_to_transactions(spark, args.output)
    names = run_report(spark, args.output)
    print(f"report with {len(names)} charts written to {storage.join(args.output, STAGE, 'index.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
