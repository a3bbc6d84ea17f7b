"""The segment report for marketers: one HTML file that opens from disk, plus the chart PNGs.

    python -m jobs.report --output output      # reads output/segments, output/backtest, output/ingest

Writes ``<output>/report/index.html`` (images embedded) and ``<output>/report/*.png``;
the tables and the page are made in ``segmentation.report``, the charts in ``segmentation.charts``.
"""

from __future__ import annotations

import argparse
import sys

from runtime import cli, layout, storage
from runtime.spark import build_session
from runtime.stages.report import STAGE, run_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory (reads segments, backtest, ingest)")
    cli.add_session_arguments(parser)
    args = parser.parse_args(argv)
    settings = cli.resolve_settings(args, app_name="segrec-report")
    spark = build_session(settings.spark)
    layout.fit_to_transactions(spark, args.output)
    names = run_report(spark, args.output, settings.report)
    print(f"report with {len(names)} charts written to {storage.join(args.output, STAGE, 'index.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
