"""The purchases the web app recorded, as a file the next pipeline run takes in with the log.

    python -m webapp.events export --output events.csv [--since 2011-12-10] [--store output/segrec.sqlite]
    python -m jobs.pipeline --input log.parquet --events events.csv --output output

Only purchases are written (views and carts are not transactions). A purchase posted without a price
gets the item's price in the store (the median of its last 90 days), without a quantity 1; its order
is its session, else the event itself; its country is the customer's in the store. ``--since`` keeps
the purchases on or after a day: when the log the next run reads already holds the storefront's
orders up to some day, export only what came after it, or those purchases count twice.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import sqlite3
import sys
from contextlib import closing

from webapp import DEFAULTS, audit, operators, schema

COLUMNS = ("order_id", "customer_id", "item_id", "timestamp", "quantity", "unit_price", "country")  # transactions.ingest.EVENT_COLUMNS


def purchases(state, store_path: str, since: dt.date | None = None):
    """Rows of ``COLUMNS``: each purchase event, oldest first, its gaps filled from the store."""
    try:
        with closing(sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)) as store:
            found = schema.problems(store)
            if not found:
                prices = dict(store.execute("SELECT item_id, price FROM items"))
                countries = dict(store.execute("SELECT customer_id, country FROM customers"))
    except sqlite3.Error as error:
        found = [str(error)]
    if found:
        raise operators.OperatorError(f"the store {store_path} gives no prices and countries ({'; '.join(found)}): "
                                      "give the served one with --store, or publish again")
    rows = state.query("SELECT id, customer_id, item_id, timestamp, session_id, quantity, price FROM events "
                       "WHERE type = 'purchase' AND timestamp >= ? ORDER BY timestamp, id", ((since or dt.date.min).isoformat(),))
    for row in rows:
        order = f"session-{row['session_id']}" if row["session_id"] else f"event-{row['id']}"
        when = dt.datetime.fromisoformat(row["timestamp"]).strftime("%Y-%m-%d %H:%M:%S")  # stored in UTC
        yield (order, row["customer_id"], row["item_id"], when, row["quantity"] or 1.0,
               row["price"] if row["price"] is not None else prices.get(row["item_id"]), countries.get(row["customer_id"]))


def export(state, store_path: str, output: str, since: dt.date | None = None) -> int:
    """Write the purchases to ``output`` (CSV, renamed into place when whole); how many."""
    temporary = f"{output}.tmp"
    count = 0
    with open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in purchases(state, store_path, since):
            writer.writerow(row)
            count += 1
    os.replace(temporary, output)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = operators.parser(__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    exporting = commands.add_parser("export", help="write the recorded purchases as a CSV for jobs.pipeline --events")
    exporting.add_argument("--output", required=True, help="the CSV to write")
    exporting.add_argument("--since", type=dt.date.fromisoformat, help="only purchases on or after this day (YYYY-MM-DD)")
    exporting.add_argument("--store", default=os.environ.get("SEGREC_DB", DEFAULTS["SEGREC_DB"]),
                           help="the published store, for prices and countries (default: $SEGREC_DB, else %(default)s)")
    args = parser.parse_args(argv)
    state = operators.open_state(args.state_db)
    count = audit.audited(state, "events-export", args.output[-64:], lambda: export(state, args.store, args.output, args.since),
                          detail=f"since {args.since}" if args.since else "")
    print(f"{count:,} purchases written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(operators.run(main))
