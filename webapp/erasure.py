"""Erasing customers from the app's two SQLite files (the published store and the app's own state); no Spark.

The admin page's erasure (``ErasureRunner``) does this at once, so the app stops
serving the customers, then runs ``jobs.erase`` on the pipeline output in a child process.

Every table with a ``customer_id`` column loses the customer's rows. Then the file is
vacuumed, so that the deleted rows do not linger in free pages or the write-ahead log.
The store is rewritten beside itself and renamed into place, as publishing does, so
the app swaps to it without a restart.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing, contextmanager


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


MAX_CUSTOMERS_PER_REQUEST = 1000


class ErasureRunner:
    """Erases from the app's two files at once, then runs ``jobs.erase`` (Spark, in its own process) on the pipeline output.

    The web process never imports pyspark: the job is a child process, given the ids on its standard
    input so they stay out of the process list. Jobs are rows of the app's database (counts and outcome,
    never the ids), so every server process shows them all; a lock file beside that database makes them
    run one after another, whichever process took them.

    Until its job ends, a job's ids wait in a file only the server's user can read (``<state db>.erasure-pending/<job>``;
    the output still holds the customers then anyway), locked by the process running it. Each server worker, as it
    starts (a restarted one, say), takes over with ``resume`` every job whose process died, so no erasure is left half done.
    """

    def __init__(self, output: str, store_db: str, state):
        self.output, self.store_db, self.state = output, store_db, state
        self.pending = state.path + ".erasure-pending"

    def request(self, customer_ids: list[str], requested_by: str) -> int:
        """Erase ``customer_ids`` from the app's files now and start the job for the output; the job's number."""
        removed = {f"store/{table}": rows for table, rows in
                   (erase_from_store(self.store_db, customer_ids) if os.path.exists(self.store_db) else {}).items() if rows}
        removed.update({f"state/{table}": rows for table, rows in erase_from_state(self.state.path, customer_ids).items() if rows})
        with self._registry():
            number = self.state.write("INSERT INTO erasure_jobs (requested_by, customers, removed_now) VALUES (?, ?, ?)",
                                      (requested_by, len(customer_ids), json.dumps(removed)))
            os.makedirs(self.pending, mode=0o700, exist_ok=True)
            descriptor = os.open(self._pending_file(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "w") as handle:
                handle.write("\n".join(customer_ids) + "\n")
            self._start(number)
        return number

    def resume(self) -> list[int]:
        """Start every job whose process died (its pending file unlocked); the numbers taken over. A job whose ids are gone
        (recorded before pending files were kept) cannot run again and is marked failed, saying what is left to do."""
        taken = []
        with self._registry():
            for row in self.state.query("SELECT id FROM erasure_jobs WHERE state = 'running'"):
                number = row["id"]
                if not os.path.exists(self._pending_file(number)):
                    self.state.write("UPDATE erasure_jobs SET state = 'failed', outcome = ? WHERE id = ?",
                                     ("interrupted, and its ids were not kept: the app's files were erased, the pipeline output "
                                      "was not; erase these customers from it again (admin page or python -m jobs.erase)", number))
                elif self._start(number):
                    taken.append(number)
        return taken

    def jobs(self) -> list[dict]:
        """Newest first, each with ``removed_now`` (rows per table of the app's files removed before the job ran)."""
        rows = self.state.query("SELECT * FROM erasure_jobs ORDER BY id DESC")
        return [{**dict(row), "removed_now": json.loads(row["removed_now"])} for row in rows]

    def wait(self, timeout: float) -> bool:
        """Whether every job has ended within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.state.query("SELECT 1 FROM erasure_jobs WHERE state = 'running' LIMIT 1"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def _pending_file(self, number: int) -> str:
        return os.path.join(self.pending, str(number))

    @contextmanager
    def _registry(self):
        """Recording a job and looking for orphaned ones exclude each other across the server's processes."""
        with open(self.state.path + ".erasure-registry", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _start(self, number: int) -> bool:
        """Run job ``number`` in a thread holding its pending file's lock; False when a live process holds it already."""
        try:
            handle = open(self._pending_file(number))
        except FileNotFoundError:  # its process finished it a moment ago
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        if not self.state.query("SELECT 1 FROM erasure_jobs WHERE id = ? AND state = 'running'", (number,)):
            handle.close()  # finished between our look and our lock
            return False
        threading.Thread(target=self._run, args=(number, handle), name=f"segrec-erasure-{number}", daemon=True).start()
        return True

    def _run(self, number: int, pending) -> None:
        with pending:
            customer_ids = [line for line in pending.read().splitlines() if line]
            with open(self.state.path + ".erasure-lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one job at a time across the server's processes
                state, outcome = self._erase_output(customer_ids)
            # The ids go before the job is marked ended, and both while it is locked: no process can take it over any more.
            os.remove(self._pending_file(number))
            self.state.write("UPDATE erasure_jobs SET state = ?, outcome = ? WHERE id = ?", (state, outcome, number))

    def _erase_output(self, customer_ids: list[str]) -> tuple[str, str]:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        command = [sys.executable, "-m", "jobs.erase", "--output", self.output, "--customers-from", "-",
                   "--db", self.store_db, "--state-db", self.state.path]
        try:
            finished = subprocess.run(command, input="\n".join(customer_ids) + "\n", capture_output=True, text=True, cwd=root,
                                      env=environment)
        except OSError as error:
            return "failed", f"could not start jobs.erase: {error}"
        if finished.returncode != 0:
            lines = finished.stderr.strip().splitlines()
            return "failed", (lines[-1] if lines else f"jobs.erase exited with {finished.returncode}")
        return "done", finished.stdout.strip().splitlines()[-1]  # "report: <path>"


def reports(output: str, limit: int = 20) -> list[dict]:
    """The newest erasure reports under a local output (counts only), newest first."""
    directory = os.path.join(output, "erasure", "reports")
    if not os.path.isdir(directory):
        return []
    names = sorted((name for name in os.listdir(directory) if name.endswith(".json")), reverse=True)[:limit]
    found = []
    for name in names:
        with open(os.path.join(directory, name)) as handle:
            report = json.load(handle)
        found.append({"erased_at": report["erased_at"], "customers": report["customers"], "rows": sum(report["removed"].values()),
                      "stale_models": ", ".join(report.get("stale_models", [])), "not_removed": report.get("not_removed", [])})
    return found
