"""The published store's tables: written by ``jobs.publish``, read by the web app.

Plain Python and SQL only, so both sides share it without the app importing Spark.
"""

from __future__ import annotations

import sqlite3

VERSION = 4  # 2: bought; 3: items with price, buyers, first_sold and item_group; new_arrivals; content neighbours;
# 4: lifecycle, purchases_by_day and affinity for audiences, runs and migration
EVERY_COUNTRY = ""  # the trending rows for visitors of any country

# table -> (columns with their SQL types, primary key)
TABLES = {
    "meta": ({"key": "TEXT", "value": "TEXT NOT NULL"}, ("key",)),
    "customers": ({
        "customer_id": "TEXT", "segment": "TEXT NOT NULL", "country": "TEXT", "frequency": "REAL", "recency": "REAL", "T": "REAL",
        "monetary_value": "REAL", "orders": "INTEGER", "total_spend": "REAL", "first_purchase": "TEXT", "last_purchase": "TEXT",
        "days_since_last": "INTEGER", "p_alive": "REAL", "expected_purchases": "REAL", "expected_avg_spend": "REAL", "clv": "REAL",
        "lifecycle": "TEXT NOT NULL", "usual_gap_days": "REAL",
    }, ("customer_id",)),
    "lifecycle": ({"lifecycle": "TEXT", "segment": "TEXT", "customers": "INTEGER", "revenue": "REAL"}, ("lifecycle", "segment")),
    "segments": ({
        "segment": "TEXT", "customers": "INTEGER", "share_of_customers": "REAL", "revenue": "REAL", "share_of_revenue": "REAL",
        "mean_frequency": "REAL", "mean_recency": "REAL", "mean_total_spend": "REAL", "mean_days_since_last": "REAL",
        "mean_p_alive": "REAL", "mean_clv": "REAL", "median_clv": "REAL",
    }, ("segment",)),
    "recommendations": ({"customer_id": "TEXT", "list": "TEXT", "rank": "INTEGER", "item_id": "TEXT NOT NULL", "score": "REAL",
                         "source": "TEXT NOT NULL"}, ("customer_id", "list", "rank")),
    "trending": ({"country": "TEXT", "rank": "INTEGER", "item_id": "TEXT NOT NULL", "score": "REAL", "source": "TEXT"}, ("country", "rank")),
    # source: also_bought (co-purchases), or content (words: new items with too few buyers, after their co-purchases)
    "similar_items": ({"item_id": "TEXT", "rank": "INTEGER", "similar_item_id": "TEXT NOT NULL", "score": "REAL", "source": "TEXT"},
                      ("item_id", "rank")),
    "new_item_neighbours": ({"item_id": "TEXT", "rank": "INTEGER", "new_item_id": "TEXT NOT NULL", "score": "REAL"}, ("item_id", "rank")),
    "new_arrivals": ({"country": "TEXT", "rank": "INTEGER", "item_id": "TEXT NOT NULL", "score": "REAL"}, ("country", "rank")),
    "items": ({"item_id": "TEXT", "description": "TEXT", "price": "REAL", "buyers": "INTEGER", "first_sold": "TEXT",
               "item_group": "TEXT"}, ("item_id",)),
    "bought": ({"customer_id": "TEXT", "item_id": "TEXT"}, ("customer_id", "item_id")),  # so discover never offers what was bought
    "customer_days": ({"customer_id": "TEXT", "day": "TEXT", "revenue": "REAL"}, ("customer_id", "day")),
    # audience rules: who bought an item (or a group's) in a period, and who is most likely to (kind: item or group)
    "purchases_by_day": ({"item_id": "TEXT", "day": "TEXT", "customer_id": "TEXT"}, ("item_id", "day", "customer_id")),
    "affinity": ({"kind": "TEXT", "key": "TEXT", "rank": "INTEGER", "customer_id": "TEXT NOT NULL", "score": "REAL"}, ("kind", "key", "rank")),
    "charts": ({"name": "TEXT", "png": "BLOB NOT NULL"}, ("name",)),
    # the pipeline runs kept (runtime/history.py), and how customers moved between the segments of the last two
    "runs": ({"run_id": "TEXT", "as_of": "TEXT", "started_at": "TEXT", "customers": "INTEGER", "current": "INTEGER"}, ("run_id",)),
    "migration": ({"from_segment": "TEXT", "to_segment": "TEXT", "customers": "INTEGER", "revenue": "REAL"}, ("from_segment", "to_segment")),
}
INDEXES = "CREATE INDEX items_by_group ON items (item_group, buyers);"  # rules that restrict to a group top up from it
# WITHOUT ROWID keeps each table clustered on its key: one B-tree lookup per request.
DDL = "\n".join(
    f"CREATE TABLE {name} ({', '.join(f'{column} {kind}' for column, kind in columns.items())}, PRIMARY KEY ({', '.join(key)})) WITHOUT ROWID;"
    for name, (columns, key) in TABLES.items()
) + "\n" + INDEXES
# Tables that must have rows for the store to be served.
NON_EMPTY = ("meta", "customers", "segments", "lifecycle", "recommendations", "trending", "items")
META_KEYS = ("run_id", "as_of", "created_at", "schema_version")


def columns(table: str) -> list[str]:
    return list(TABLES[table][0])


def problems(connection: sqlite3.Connection) -> list[str]:
    """What is wrong with a store, as short sentences; empty when it can be served."""
    present = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [name for name in TABLES if name not in present]
    if missing:
        return [f"missing table(s) {', '.join(missing)}"]
    found = [f"table {name} is empty" for name in NON_EMPTY if connection.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone() is None]
    meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
    found += [f"meta lacks {key}" for key in META_KEYS if key not in meta]
    if meta.get("schema_version") not in (None, str(VERSION)):
        found.append(f"schema version {meta['schema_version']} is not {VERSION}")
    return found
