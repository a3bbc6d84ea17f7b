"""Ingest: read a raw transaction log, sort every row into exactly one place (``transactions.ingest``) and publish them.

    clean       purchases by known customers
    returns     cancellations ("C" invoices) and negative quantities, with negative amounts
    anonymous   purchases with no customer id (they still count for item popularity)
    quarantine  everything else, with its source columns, a ``reason`` and a ``detail``

The counts of the four places add up to the number of input rows; this is
checked on every run and written to ``summary.json``.

Run it alone with ``python -m jobs.ingest --input data/online_retail_ii.parquet --output output``
(writes ``output/ingest/``) or as the first stage of ``jobs.pipeline``.
"""

from __future__ import annotations

import argparse
import sys

from runtime import cli, storage
from runtime.spark import build_session, fit_to_input
from runtime.stages.ingest import STAGE, format_summary, run_ingest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="transactions: CSV, Parquet or Excel (path or URI)")
    parser.add_argument("--output", required=True, help="output directory (path or URI); writes <output>/ingest")
    cli.add_ingest_arguments(parser)
    cli.add_common_arguments(parser)
    args = parser.parse_args(argv)
    settings = cli.resolve_settings(args, app_name="segrec-ingest")
    spark = build_session(settings.spark)
    fit_to_input(spark, args.input)
    summary = run_ingest(spark, args.input, args.output, settings.ingest, args.as_of, args.events)
    print(format_summary(summary))
    print(f"written to {storage.join(args.output, STAGE)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
