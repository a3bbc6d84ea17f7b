"""Reading the store: what the API and the pages show. Parameterised SQL only."""

from __future__ import annotations

import datetime as dt
import re

from webapp.errors import BadRequest
from webapp.schema import EVERY_COUNTRY
from webapp.state import get_state, get_store

LISTS = ("for_you", "discover", "buy_again")
EVENT_TYPES = ("purchase", "view")
# Matched against the whole value (fullmatch): "$" alone would let a trailing newline through.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
COUNTRY_PATTERN = re.compile(r"[A-Za-z][A-Za-z .'()\-]{0,63}")
MAX_EVENTS_PER_CUSTOMER = 1000  # the newest are kept: a purchase only ever needs to leave the discover list until the next publish
MAX_EVENTS_PER_KEY = 100_000  # so that no client, however many customer ids it makes up, grows the database without limit


class NotFound(LookupError):
    pass


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise BadRequest(f"{what} must be 1-64 letters, digits, '.', '_' or '-', got {value!r:.80}")
    return value


def check_n(value, maximum: int, default: int = 10) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"n must be a whole number from 1 to {maximum}, got {value!r:.40}") from None
    if not 1 <= n <= maximum:
        raise BadRequest(f"n must be from 1 to {maximum}, got {n}")
    return n


def check_choice(value, choices: tuple[str, ...], what: str, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if value not in choices:
        raise BadRequest(f"{what} must be one of {', '.join(choices)}, got {value!r:.40}")
    return value


def check_country(value) -> str | None:
    if value is None or value == "":
        return None
    if not COUNTRY_PATTERN.fullmatch(value):
        raise BadRequest(f"country must be a country name (letters, spaces, . ' ( ) -), got {value!r:.80}")
    return value


def _described(rows) -> list[dict]:
    return [{"rank": position, "item_id": row["item_id"], "description": row["description"], "score": row["score"]}
            for position, row in enumerate(rows, start=1)]


def _with_count(answer: dict, n: int) -> dict:
    """The answer with how many items were asked for and whether fewer were there (the stored list is shorter than ``n``)."""
    return {**answer, "n_requested": n, "truncated": len(answer["items"]) < n}


def bought_since_publish(customer_id: str) -> set[str]:
    rows = get_state().query("SELECT DISTINCT item_id FROM events WHERE customer_id = ? AND type = 'purchase'", (customer_id,))
    return {row["item_id"] for row in rows}


def trending(n: int, country: str | None) -> tuple[list, str | None]:
    """The cold-start list for a country (or everyone); and the country actually used."""
    store = get_store()
    sql = ("SELECT t.item_id, t.score, t.source, i.description FROM trending t LEFT JOIN items i ON i.item_id = t.item_id "
           "WHERE t.country = ? ORDER BY t.rank LIMIT ?")
    if country is not None:
        rows = store.query(sql, (country, n))
        if rows:
            return rows, country
    return store.query(sql, (EVERY_COUNTRY, n)), None


def recommendations(customer_id: str, list_name: str, n: int, country: str | None) -> dict:
    store = get_store()
    customer = store.query("SELECT segment, country FROM customers WHERE customer_id = ?", (customer_id,))
    if not customer:
        rows, used = trending(n, country)
        return _with_count({"customer_id": customer_id, "known": False, "segment": None, "list": list_name, "country": used,
                            "source": rows[0]["source"] if rows else None, "items": _described(rows)}, n)
    excluded = bought_since_publish(customer_id) if list_name == "discover" else set()
    rows = store.query(
        "SELECT r.item_id, r.score, r.source, i.description FROM recommendations r LEFT JOIN items i ON i.item_id = r.item_id "
        "WHERE r.customer_id = ? AND r.list = ? ORDER BY r.rank LIMIT ?", (customer_id, list_name, n + len(excluded)))
    rows = [row for row in rows if row["item_id"] not in excluded][:n]
    sources = sorted({row["source"] for row in rows})
    return _with_count({"customer_id": customer_id, "known": True, "segment": customer[0]["segment"], "list": list_name,
                        "country": customer[0]["country"], "source": "+".join(sources) if sources else None, "items": _described(rows)}, n)


def customer(customer_id: str) -> dict:
    rows = get_store().query("SELECT * FROM customers WHERE customer_id = ?", (customer_id,))
    if not rows:
        raise NotFound(f"customer {customer_id} is not in the store")
    return dict(rows[0])


def similar(item_id: str, n: int) -> dict:
    store = get_store()
    item = store.query("SELECT description FROM items WHERE item_id = ?", (item_id,))
    if not item:
        raise NotFound(f"item {item_id} is not in the store")
    rows = store.query(
        "SELECT s.similar_item_id AS item_id, s.score, i.description FROM similar_items s "
        "LEFT JOIN items i ON i.item_id = s.similar_item_id WHERE s.item_id = ? ORDER BY s.rank LIMIT ?", (item_id, n))
    return _with_count({"item_id": item_id, "description": item[0]["description"], "items": _described(rows)}, n)


def segments() -> list[dict]:
    return [dict(row) for row in get_store().query("SELECT * FROM segments ORDER BY mean_clv DESC")]


def health() -> dict:
    store = get_store()
    version = store.version()
    created = dt.datetime.fromisoformat(version.meta["created_at"])
    age = (dt.datetime.now(dt.timezone.utc) - created).total_seconds()
    return {"status": "ok", "store": {**version.meta, "age_seconds": round(age)}, "problem_with_newer_file": store.last_problem}


def record_event(body, *, key_name: str) -> int:
    """Store one event posted with the API key ``key_name``; its id."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with customer_id, item_id, type and timestamp")
    unknown = sorted(set(body) - {"customer_id", "item_id", "type", "timestamp"})
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; fields are customer_id, item_id, type, timestamp")
    customer_id = check_id(body.get("customer_id"), "customer_id")
    item_id = check_id(body.get("item_id"), "item_id")
    kind = check_choice(body.get("type"), EVENT_TYPES, "type")
    when = body.get("timestamp")
    try:
        parsed = dt.datetime.fromisoformat(when)
    except (TypeError, ValueError):
        raise BadRequest(f"timestamp must be an ISO 8601 date-time such as 2011-12-09T12:50:00Z, got {when!r:.40}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    try:
        stamp = parsed.astimezone(dt.timezone.utc).isoformat()
    except OverflowError:
        raise BadRequest(f"timestamp {when!r:.40} is out of range") from None
    connection = get_state().connection()
    with connection:  # one transaction: the event, then the oldest beyond each bound go
        event_id = connection.execute("INSERT INTO events (customer_id, item_id, type, timestamp, key_name) VALUES (?, ?, ?, ?, ?)",
                                      (customer_id, item_id, kind, stamp, key_name)).lastrowid
        for column, value, bound in (("customer_id", customer_id, MAX_EVENTS_PER_CUSTOMER), ("key_name", key_name, MAX_EVENTS_PER_KEY)):
            connection.execute(f"DELETE FROM events WHERE {column} = ? AND id <= (SELECT id FROM events WHERE {column} = ? "
                               "ORDER BY id DESC LIMIT 1 OFFSET ?)", (value, value, bound))
    return event_id
