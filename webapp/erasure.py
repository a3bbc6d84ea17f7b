"""Erasing customers from the app's two SQLite files (the published store and the app's own state); no Spark.

Every table with a ``customer_id`` column loses the customer's rows. Then the file is
vacuumed, so that the deleted rows do not linger in free pages or the write-ahead log.
The store is rewritten beside itself and renamed into place, as publishing does, so
the app swaps to it without a restart.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from contextlib import closing


def _customer_tables(connection: sqlite3.Connection) -> list[str]:
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [table for table in tables if any(column[1] == "customer_id" for column in connection.execute(f'PRAGMA table_info("{table}")'))]


def erase_rows(connection: sqlite3.Connection, customer_ids: list[str]) -> dict[str, int]:
    """Delete the customers' rows from every table with a customer_id; rows removed per table."""
    removed = {}
    placeholders = ", ".join("?" for _ in customer_ids)
    with connection:
        for table in _customer_tables(connection):
            removed[table] = connection.execute(f'DELETE FROM "{table}" WHERE customer_id IN ({placeholders})', customer_ids).rowcount
    connection.execute("VACUUM")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return removed


def erase_from_store(path: str, customer_ids: list[str]) -> dict[str, int]:
    """The published store without the customers, renamed into place (a copy is edited; the app never sees half of it)."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".segrec-erase-", suffix=".sqlite.tmp", dir=directory)
    os.close(handle)
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as source, closing(sqlite3.connect(temporary)) as copy:
            source.backup(copy)
            removed = erase_rows(copy, customer_ids)
            copy.execute("PRAGMA journal_mode=DELETE")
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return removed


def erase_from_state(path: str, customer_ids: list[str]) -> dict[str, int]:
    """The app's own file, edited in place (it is the app's live database; SQLite's locking keeps readers consistent)."""
    with closing(sqlite3.connect(path, timeout=30)) as connection:
        return erase_rows(connection, customer_ids)


def record_erasure(path: str, report: dict) -> None:
    """The erasure in the app's audit trail: how many customers and rows, never who."""
    from webapp import audit
    from webapp.state import State

    rows = sum(report["removed"].values())
    audit.record(State(path), "erase", f"{report['customers']} customer(s)", detail=f"{rows:,} rows removed; report {report['erased_at']}")
