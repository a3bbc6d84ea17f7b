"""The published store, opened read-only and swapped for a newer one without a restart.

``jobs.publish`` renames a complete file into place. At most once per
``check_seconds`` the ``Store`` looks at the file; when it changed (a new
inode, size or modification time) it opens the new one and checks it
(``schema.problems``), and switches only if it passes. The connection of the
version being served stays open, so even when a broken file is put in its
place the previous store keeps being served: on POSIX a file that was renamed
over lives on while it is open. SQLite here is built thread-safe
(``sqlite3.threadsafety == 3``), so one read-only connection serves all threads.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass

from webapp import schema

log = logging.getLogger(__name__)


class StoreUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Version:
    identity: tuple  # (inode, size, mtime): changes when a new file is published
    meta: dict
    connection: sqlite3.Connection

    @property
    def label(self) -> str:
        return f"run {self.meta.get('run_id')} as of {self.meta.get('as_of')}"


def _identity(path: str) -> tuple:
    stat = os.stat(path)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class Store:
    def __init__(self, path: str, *, check_seconds: float = 1.0, clock=time.monotonic):
        if sqlite3.threadsafety != 3:
            raise RuntimeError("this Python's sqlite3 is not built thread-safe (sqlite3.threadsafety != 3)")
        self.path = path
        self.check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._version: Version | None = None
        self._next_check = 0.0
        self.last_problem: str | None = None  # why the file on disk is not being served, when it is not

    def _refresh(self) -> None:
        try:
            identity = _identity(self.path)
            if self._version is not None and identity == self._version.identity:
                return
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            found = schema.problems(connection)
        except (OSError, sqlite3.Error) as error:
            found, connection = [f"cannot read {self.path}: {error}"], None
        if found:
            if connection is not None:
                connection.close()
            if self.last_problem != "; ".join(found):
                log.warning("not serving %s: %s", self.path, "; ".join(found))
            self.last_problem = "; ".join(found)
            return
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        # The previous connection is not closed here: requests still using it hold a
        # reference, and it closes when the last of them lets go.
        self._version, self.last_problem = Version(identity, meta, connection), None
        log.info("serving store %s", self._version.label)

    def version(self) -> Version:
        now = self._clock()
        if now >= self._next_check:
            with self._lock:
                if now >= self._next_check:
                    self._refresh()
                    self._next_check = now + self.check_seconds
        if self._version is None:
            raise StoreUnavailable(self.last_problem or f"no store at {self.path}")
        return self._version

    def query(self, sql: str, parameters=()) -> list[sqlite3.Row]:
        return self.version().connection.execute(sql, parameters).fetchall()
