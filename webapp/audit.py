"""The audit trail: who did what, from where, and how it went; append-only (the schema refuses changes).

Recorded: every sign-in (success and failure), sign-out, user and key change,
campaign creation, export and results upload, merchandising rule, erasure and configuration change.
Never a password, a key or a customer's data: the target names the account, key or
campaign acted on.
"""

from __future__ import annotations

import csv
import datetime as dt
import getpass
import hashlib
import io
import json

from flask import has_request_context, request
from flask_login import current_user

from webapp.exports import spreadsheet_safe

COLUMNS = ("at", "actor", "address", "action", "target", "outcome", "detail")
FILTERS = ("actor", "action", "outcome")


def actor() -> str:
    """The signed-in user, the API key, or (outside a request) the operator at the command line."""
    if not has_request_context():
        return f"cli:{getpass.getuser()}"
    key = getattr(request, "api_key", None)  # set by webapp.auth on every request
    if key is not None:
        return f"key:{key.name}"
    return current_user.name if current_user.is_authenticated else "anonymous"


def record(state, action: str, target: str = "", outcome: str = "ok", detail: str = "", *, who: str | None = None) -> None:
    address = (request.remote_addr or "unknown") if has_request_context() else "local"
    state.write("INSERT INTO audit (actor, address, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (who or actor(), address, action, target, outcome, detail))


def audited(state, action: str, target: str, change, *, detail: str = "", refused=(ValueError,)):
    """Make ``change`` (a callable) and record it; a change refused with one of ``refused`` is recorded as refused and re-raised."""
    try:
        result = change()
    except refused as error:
        record(state, action, target, "refused", str(error))
        raise
    record(state, action, target, detail=detail)
    return result


def record_configuration(app) -> bool:
    """The app's settings as it starts, recorded when they differ from the last start's (whether the change was made in
    the environment or a file); the secret key only as a fingerprint, so a new one shows. Whether a change was recorded."""
    from webapp import DEFAULTS
    from webapp.state import get_state

    settings = {key: str(app.config[key]) for key in (*DEFAULTS, "SESSION_COOKIE_SECURE")}
    settings["SECRET_KEY"] = "fingerprint " + hashlib.sha256(app.config["SECRET_KEY"].encode()).hexdigest()[:12]
    with app.app_context():
        state = get_state()
        last = entries(state, action="configuration", limit=1)
        previous = json.loads(last[0]["detail"]) if last else {}
        changed = sorted(key for key in settings if previous.get(key) != settings[key])
        if not changed:
            return False
        record(state, "configuration", ", ".join(changed) if previous else "first start", detail=json.dumps(settings, sort_keys=True),
               who="start")
        return True


def entries(state, *, since: str | None = None, until: str | None = None, limit: int | None = None, **equal) -> list[dict]:
    """Newest first; ``equal`` filters on ``FILTERS`` columns, ``since``/``until`` on the ISO time."""
    clauses, parameters = [], []
    for column, value in equal.items():
        if column not in FILTERS:
            raise ValueError(f"cannot filter the audit trail on {column}")
        if value:
            clauses.append(f"{column} = ?")
            parameters.append(value)
    if since:
        clauses.append("at >= ?")
        parameters.append(since)
    if until:  # a date, counted whole
        clauses.append("at < ?")
        parameters.append((dt.date.fromisoformat(until) + dt.timedelta(days=1)).isoformat())
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    tail = f" LIMIT {int(limit)}" if limit else ""
    return [dict(row) for row in state.query(f"SELECT {', '.join(COLUMNS)} FROM audit {where} ORDER BY id DESC{tail}", parameters)]


def as_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    writer.writerows([spreadsheet_safe(row[column]) for column in COLUMNS] for row in rows)
    return out.getvalue()
