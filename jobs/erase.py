"""Erase customers from everything segrec holds for one output: the right to be forgotten.

    python -m jobs.erase --output output --customer 12011 [--customer 12012 ...]
        [--customers-from FILE] [--db output/segrec.sqlite] [--state-db output/segrec-state.sqlite]

Removes the customers' rows from every stage under ``--output`` (ingest tables,
segments, backtest, lists, every saved model's ids and factors, evaluation), from the
published store and from the app's own database (events), each rewritten atomically;
adds their keyed hashes to the suppression list the ingest honours on every later run;
marks the models stale until the next refit; and writes a report of what was removed,
with counts only, to ``<output>/erasure/reports/``. The raw input is not segrec's to
change: the report names it.
"""

from __future__ import annotations

import argparse
import os
import sys

from runtime import cli
from runtime.spark import build_session
from runtime.stages.erasure import erase_customers, format_report


def customer_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a customer id cannot be empty")
    return text.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline output directory")
    parser.add_argument("--customer", action="append", default=[], type=customer_id, help="a customer id to erase (repeatable)")
    parser.add_argument("--customers-from", type=argparse.FileType("r"), metavar="FILE",
                        help="a file of customer ids to erase, one per line ('-' reads standard input; the ids stay out of the "
                             "process list)")
    parser.add_argument("--db", help="the published store (default <output>/segrec.sqlite, when it exists)")
    parser.add_argument("--state-db", help="the app's own database (default <output>/segrec-state.sqlite, when it exists)")
    parser.add_argument("--config", help="TOML or JSON file with settings per stage")
    parser.add_argument("--master", help="Spark master when not run through spark-submit")
    args = parser.parse_args(argv)
    customers = args.customer + ([line.strip() for line in args.customers_from if line.strip()] if args.customers_from else [])
    if not customers:
        parser.error("name the customers to erase with --customer or --customers-from")
    spark = build_session(cli.resolve_settings(args, app_name="segrec-erase").spark)
    report = erase_customers(spark, args.output, customers, store_db=args.db or os.path.join(args.output, "segrec.sqlite"),
                             state_db=args.state_db or os.path.join(args.output, "segrec-state.sqlite"))
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
