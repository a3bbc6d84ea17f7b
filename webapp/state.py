"""What the app owns: events, campaigns and campaign results, accounts, API keys, erasure jobs, merchandising rules and the
audit trail, in their own SQLite file.

One connection per thread (WAL journal, so readers never wait for a writer);
every statement is parameterised.
"""

from __future__ import annotations

import sqlite3
import threading

from flask import Flask, abort, current_app

SQLITE_MAX_INTEGER = 2 ** 63 - 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, customer_id TEXT NOT NULL, item_id TEXT NOT NULL, type TEXT NOT NULL,
    timestamp TEXT NOT NULL, received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), key_name TEXT,
    session_id TEXT, quantity REAL, price REAL
);
CREATE INDEX IF NOT EXISTS events_by_customer ON events (customer_id, type);
CREATE TABLE IF NOT EXISTS campaigns (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, segments TEXT NOT NULL, list TEXT NOT NULL, n INTEGER NOT NULL,
    control_share REAL NOT NULL, salt TEXT NOT NULL, store_run TEXT NOT NULL, as_of TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    session_version INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL UNIQUE, secret_hash TEXT NOT NULL,
    scopes TEXT NOT NULL, rate_per_minute INTEGER NOT NULL, revoked_at TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    actor TEXT NOT NULL, address TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at);
-- The audit trail is append-only: rows are never changed or removed.
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TABLE IF NOT EXISTS erasure_jobs (
    id INTEGER PRIMARY KEY, requested_by TEXT NOT NULL, customers INTEGER NOT NULL, removed_now TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'running', outcome TEXT NOT NULL DEFAULT '',
    requested_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS item_rules (
    item_id TEXT PRIMARY KEY, rule TEXT NOT NULL CHECK (rule IN ('block', 'promote')), note TEXT NOT NULL DEFAULT '',
    set_by TEXT NOT NULL, set_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audiences (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, definition TEXT NOT NULL, created_by TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), updated_at TEXT
);
-- Customers who opted out: no audience, preview or export ever includes them.
CREATE TABLE IF NOT EXISTS suppressed (
    customer_id TEXT PRIMARY KEY, added_by TEXT NOT NULL, added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS campaign_results (
    id INTEGER PRIMARY KEY, campaign_id INTEGER NOT NULL REFERENCES campaigns (id), source TEXT NOT NULL,
    rows INTEGER NOT NULL, summary TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
"""


def _upgrade(connection: sqlite3.Connection) -> None:
    """Bring a file made by an older version up to the schema: columns added since, and their indexes."""
    present = {column[1] for column in connection.execute("PRAGMA table_info(events)")}
    for column, kind in (("key_name", "TEXT"), ("session_id", "TEXT"), ("quantity", "REAL"), ("price", "REAL")):
        if column not in present:  # events posted before the column existed have none
            connection.execute(f"ALTER TABLE events ADD COLUMN {column} {kind}")
    connection.execute("CREATE INDEX IF NOT EXISTS events_by_key ON events (key_name)")
    present = {column[1] for column in connection.execute("PRAGMA table_info(campaigns)")}
    # audience: the definition the campaign targets (older campaigns targeted whole segments); a campaign is a draft until exported
    for column, kind in (("audience", "TEXT"), ("audience_id", "INTEGER"), ("exported_at", "TEXT"), ("archived_at", "TEXT"),
                         ("updated_at", "TEXT")):
        if column not in present:
            connection.execute(f"ALTER TABLE campaigns ADD COLUMN {column} {kind}")


class State:
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)
            _upgrade(connection)

    def connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=10)
            connection.row_factory = sqlite3.Row
            self._local.connection = connection
        return connection

    def query(self, sql: str, parameters=()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, parameters).fetchall()

    def row(self, table: str, row_id: int, what: str) -> dict:
        """Row ``row_id`` of ``table`` (a page's campaign, audience, ..); 404 "there is no ``what`` .." when there is none
        (an id past SQLite's integers included, which a query would refuse with an overflow)."""
        rows = self.query(f"SELECT * FROM {table} WHERE id = ?", (row_id,)) if row_id <= SQLITE_MAX_INTEGER else []
        if not rows:
            abort(404, description=f"there is no {what} {row_id}")
        return dict(rows[0])

    def write(self, sql: str, parameters=()) -> int:
        """Run one statement in its own transaction; the new row's id."""
        connection = self.connection()
        with connection:
            return connection.execute(sql, parameters).lastrowid

    def write_count(self, sql: str, parameters=()) -> int:
        """Run one statement in its own transaction; how many rows it changed."""
        connection = self.connection()
        with connection:
            return connection.execute(sql, parameters).rowcount


def init_app(app: Flask) -> None:
    import os

    directory = os.path.dirname(os.path.abspath(app.config["SEGREC_STATE_DB"]))
    os.makedirs(directory, exist_ok=True)
    app.extensions["segrec_state"] = State(app.config["SEGREC_STATE_DB"])


def get_state() -> State:
    return current_app.extensions["segrec_state"]


def get_store():
    return current_app.extensions["segrec_store"]
