"""Reading the store: what the API and the pages show. Parameterised SQL only."""

from __future__ import annotations

import datetime as dt
import json
import re

from flask import current_app

from webapp import live, rules
from webapp.audience_rules import LIFECYCLE_NAMES
from webapp.errors import BadRequest
from webapp.schema import EVERY_COUNTRY
from webapp.state import get_state, get_store

LISTS = ("for_you", "discover", "buy_again", "new_arrivals")
NEW_ARRIVALS = "new_arrivals"
EVENT_TYPES = tuple(live.EVENT_WEIGHTS)
RECENT_EVENTS = 20  # a shopper's newest events that move their lists
# Matched against the whole value (fullmatch): "$" alone would let a trailing newline through.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
# Letters of any script (Côte d'Ivoire, Türkiye, 日本), spaces and . ' ( ) -; no digits, underscores or control characters.
COUNTRY_PATTERN = re.compile(r"[^\W\d_](?:[^\W\d_]|[ .'()\-]){0,63}")
MAX_EVENTS_PER_CUSTOMER = 1000  # the newest are kept: enough for the lists (RECENT_EVENTS) and for the next run to take in
MAX_EVENTS_PER_KEY = 100_000  # so that no client, however many customer ids it makes up, grows the database without limit
RULED_DEPTH = 500  # stored rows read when a group or price rule may leave out many
CATALOGUE_SOURCE = "popular"  # the last top-up: the catalogue's most bought items that pass the rules


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


def _with_count(answer: dict, n: int) -> dict:
    """The answer with how many items were asked for and whether fewer were there (the stored list is shorter than ``n``)."""
    return {**answer, "n_requested": n, "truncated": len(answer["items"]) < n}


def _depth(n: int, filters: rules.Filters) -> int:
    """How many stored rows to read for ``n`` that pass ``filters``."""
    return max(n + len(filters.exclude_items), RULED_DEPTH if filters.needs_catalogue() else 0)


def _excluded(items: set[str], filters: rules.Filters) -> set[str]:
    """Those of ``items`` the filters leave out."""
    if not filters.needs_catalogue():
        return items & filters.exclude_items
    found = {}
    for chunk in _chunks(sorted(items)):
        found.update({row["item_id"]: (row["item_group"], row["price"]) for row in get_store().query(
            f"SELECT item_id, item_group, price FROM items WHERE item_id IN ({', '.join('?' for _ in chunk)})", tuple(chunk))})
    return {item for item in items if not filters.allows(item, *found.get(item, (None, None)))}


def _chunks(items: list[str], size: int = 900):  # SQLite's bound on one statement's parameters
    return (items[start:start + size] for start in range(0, len(items), size))


def _passing(rows: list, filters: rules.Filters, n: int) -> list:
    left_out = _excluded({row["item_id"] for row in rows}, filters)
    return [row for row in rows if row["item_id"] not in left_out][:n]


def store_filters() -> rules.Filters:
    """The store-wide rules as filters: what every list, page and export leaves out."""
    return rules.NO_FILTERS.and_blocked(rules.store_rules(get_state()).blocked)


def trending(n: int, country: str | None, filters: rules.Filters = rules.NO_FILTERS) -> tuple[list, str | None]:
    """The cold-start list for a country (or everyone), without what ``filters`` leave out; and the country actually used."""
    store = get_store()
    sql = ("SELECT t.item_id, t.score, t.source, i.description FROM trending t LEFT JOIN items i ON i.item_id = t.item_id "
           "WHERE t.country = ? ORDER BY t.rank LIMIT ?")
    if country is not None:
        rows = _passing(store.query(sql, (country, _depth(n, filters))), filters, n)
        if rows:
            return rows, country
    return _passing(store.query(sql, (EVERY_COUNTRY, _depth(n, filters))), filters, n), None


def _popular(n: int, country: str | None, filters: rules.Filters) -> tuple[list, str | None]:
    """Trending for the country, then for everyone (a small country's list may be short); and the country found."""
    rows, used = trending(n, country, filters)
    if used is not None:
        listed = {row["item_id"] for row in rows}
        rows += [row for row in trending(n, None, filters)[0] if row["item_id"] not in listed]
    return rows, used


def _most_bought(n: int, filters: rules.Filters, taken: set[str]) -> list[live.Ranked]:
    """The catalogue's most bought items that pass ``filters``, leaving out ``taken``: the top-up of last resort."""
    where, parameters = filters.sql()
    rows = get_store().query(f"SELECT item_id, buyers FROM items WHERE {where} ORDER BY buyers DESC, item_id LIMIT ?",
                             (*parameters, n + len(taken)))
    return [live.Ranked(row["item_id"], 0.0, CATALOGUE_SOURCE) for row in rows if row["item_id"] not in taken][:n]


def recent_events(customer_id: str) -> list[live.Event]:
    rows = get_state().query("SELECT item_id, type, timestamp FROM events WHERE customer_id = ? ORDER BY id DESC LIMIT ?",
                             (customer_id, RECENT_EVENTS))
    return [live.Event(row["item_id"], row["type"], dt.datetime.fromisoformat(row["timestamp"])) for row in rows]


def _neighbours(items: set[str]) -> dict[str, list[str]]:
    placeholders = ", ".join("?" for _ in items)
    rows = get_store().query(f"SELECT item_id, similar_item_id FROM similar_items WHERE item_id IN ({placeholders}) ORDER BY item_id, rank",
                             tuple(items))
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["item_id"], []).append(row["similar_item_id"])
    return found


def bought(customer_id: str, *, known: bool) -> set[str]:
    """Every item the customer bought: in the batch's data (known customers) and in their purchase events since."""
    since = get_state().query("SELECT DISTINCT item_id FROM events WHERE customer_id = ? AND type = 'purchase'", (customer_id,))
    before = get_store().query("SELECT item_id FROM bought WHERE customer_id = ?", (customer_id,)) if known else []
    return {row["item_id"] for row in [*since, *before]}


def recommendations(customer_id: str, list_name: str, n: int, country: str | None, filters: rules.Filters = rules.NO_FILTERS) -> dict:
    """The stored list fused with what the shopper's events since pull in, topped up from popularity, under the store's
    merchandising rules and the request's ``filters``; each item says its source. ``new_arrivals``: items first sold
    lately, for the shopper's country, without what they bought."""
    store = get_store()
    merchandising = rules.store_rules(get_state())
    filters = filters.and_blocked(merchandising.blocked)
    customer = store.query("SELECT segment, country FROM customers WHERE customer_id = ?", (customer_id,))
    if customer:
        country = customer[0]["country"]
    if list_name == NEW_ARRIVALS:
        ranked, used_country = new_arrivals(n, country, filters, bought(customer_id, known=bool(customer)))
    else:
        ranked, used_country = _personal(customer_id, list_name, n, country, filters, merchandising, known=bool(customer))
    descriptions = _descriptions([row.item_id for row in ranked])
    items = [{"rank": position, "item_id": row.item_id, "description": descriptions.get(row.item_id), "score": row.score,
              "source": row.source} for position, row in enumerate(ranked, start=1)]
    sources = sorted({part for row in ranked for part in row.source.split("+")})
    return _with_count({"customer_id": customer_id, "known": bool(customer), "segment": customer[0]["segment"] if customer else None,
                        "list": list_name, "country": country if customer else used_country,
                        "source": "+".join(sources) if sources else None, "items": items}, n)


def _personal(customer_id: str, list_name: str, n: int, country: str | None, filters: rules.Filters, merchandising: rules.StoreRules,
              *, known: bool) -> tuple[list[live.Ranked], str | None]:
    store = get_store()
    settings = current_app.extensions["segrec_live"]
    events = recent_events(customer_id)
    depth = _depth(n + len(events), filters)
    if known:
        batch = store.query("SELECT item_id, score, source FROM recommendations WHERE customer_id = ? AND list = ? "
                            "ORDER BY rank LIMIT ?", (customer_id, list_name, depth))
        popular, used_country = _popular(n + len(events) + len(batch), country, filters) if len(batch) < depth else ([], country)
    else:  # trending is the list a new shopper's events move (buy_again is only ever what they bought)
        popular, used_country = _popular(n + len(events), country, filters)
        batch = popular if list_name != "buy_again" else []
    neighbours = _neighbours({event.item_id for event in events}) if events else {}
    bought_items = bought(customer_id, known=known) if list_name != "buy_again" else set()
    candidates = {row["item_id"] for row in [*batch, *popular]} | {event.item_id for event in events}
    ranked = live.live_list(list_name, batch=[live.Ranked(row["item_id"], row["score"], row["source"]) for row in batch],
                            events=events, neighbours=neighbours, bought=bought_items if list_name == "discover" else set(),
                            popular=[live.Ranked(row["item_id"], row["score"], row["source"]) for row in popular],
                            n=n, now=dt.datetime.now(dt.timezone.utc), known=known, settings=settings,
                            excluded=_excluded(candidates | {item for listed in neighbours.values() for item in listed}, filters))
    if list_name == "buy_again":
        return ranked, used_country
    kept_out = bought_items if list_name == "discover" else set()
    if len(ranked) < n:
        ranked += _most_bought(n - len(ranked), filters, {row.item_id for row in ranked} | kept_out)
    if list_name == "discover" and settings.exploration_share > 0:
        anchors = live.exploration_anchors(events, ranked)
        nearest = _nearest_new(anchors)
        arrivals = [row.item_id for row in new_arrivals(n + len(ranked), country, filters, kept_out)[0]]
        ranked = live.with_exploration(ranked, anchors=anchors, nearest_new=nearest, arrivals=arrivals, n=n, settings=settings,
                                       left_out=kept_out | _excluded({item for items in nearest.values() for item in items}, filters))
    left_out = kept_out | _excluded(set(merchandising.promoted), filters)
    ranked = live.with_inserted(ranked, [item for item in merchandising.promoted if item not in left_out],
                                merchandising.promoted_share, n, rules.PROMOTED_SOURCE)
    return ranked, used_country


def new_arrivals(n: int, country: str | None, filters: rules.Filters, left_out: set[str]) -> tuple[list[live.Ranked], str | None]:
    """Items first sold lately, most buyers first: the country's list, then everyone's; and the country used."""
    sql = "SELECT item_id, score FROM new_arrivals WHERE country = ? ORDER BY rank LIMIT ?"
    depth = _depth(n + len(left_out), filters)
    rows = get_store().query(sql, (country, depth)) if country is not None else []
    used = country if rows else None
    listed = {row["item_id"] for row in rows}
    rows = [row for row in [*rows, *(row for row in get_store().query(sql, (EVERY_COUNTRY, depth)) if row["item_id"] not in listed)]
            if row["item_id"] not in left_out]
    return [live.Ranked(row["item_id"], row["score"], NEW_ARRIVALS) for row in _passing(rows, filters, n)], used


def _nearest_new(anchors: list[str]) -> dict[str, list[str]]:
    """Each anchor's nearest new items in words, in rank order."""
    nearest: dict[str, list[str]] = {}
    for chunk in _chunks(anchors):
        for row in get_store().query(f"SELECT item_id, new_item_id FROM new_item_neighbours WHERE item_id IN ({', '.join('?' for _ in chunk)}) "
                                     "ORDER BY item_id, rank", tuple(chunk)):
            nearest.setdefault(row["item_id"], []).append(row["new_item_id"])
    return nearest


def _descriptions(items: list[str]) -> dict[str, str]:
    if not items:
        return {}
    rows = get_store().query(f"SELECT item_id, description FROM items WHERE item_id IN ({', '.join('?' for _ in items)})", tuple(items))
    return {row["item_id"]: row["description"] for row in rows}


def customer(customer_id: str) -> dict:
    rows = get_store().query("SELECT * FROM customers WHERE customer_id = ?", (customer_id,))
    if not rows:
        raise NotFound(f"customer {customer_id} is not in the store")
    return dict(rows[0])


def similar(item_id: str, n: int, filters: rules.Filters = rules.NO_FILTERS) -> dict:
    store = get_store()
    item = store.query("SELECT description FROM items WHERE item_id = ?", (item_id,))
    if not item:
        raise NotFound(f"item {item_id} is not in the store")
    filters = filters.and_blocked(rules.store_rules(get_state()).blocked)
    rows = _passing(store.query("SELECT similar_item_id AS item_id, score, source FROM similar_items WHERE item_id = ? "
                                "ORDER BY rank LIMIT ?", (item_id, _depth(n, filters))), filters, n)
    ranked = [live.Ranked(row["item_id"], row["score"], row["source"]) for row in rows]
    settings = current_app.extensions["segrec_live"]
    if settings.exploration_share > 0:  # new items near this one in words, in the exploration slots
        nearest = _nearest_new([item_id])
        ranked = live.with_exploration(ranked, anchors=[item_id], nearest_new=nearest, arrivals=[], n=n, settings=settings,
                                       left_out={item_id} | _excluded(set(nearest.get(item_id, [])), filters))
    descriptions = _descriptions([row.item_id for row in ranked])
    return _with_count({"item_id": item_id, "description": item[0]["description"], "items": [
        {"rank": position, "item_id": row.item_id, "description": descriptions.get(row.item_id), "score": row.score, "source": row.source}
        for position, row in enumerate(ranked, start=1)]}, n)


def segments() -> list[dict]:
    return [dict(row) for row in get_store().query("SELECT * FROM segments ORDER BY mean_clv DESC")]


def lifecycle() -> list[dict]:
    """Per lifecycle state (in LIFECYCLE_NAMES' order): its name, one sentence, customers and revenue in all and per segment."""
    store = get_store()
    explained = json.loads(store.version().meta.get("lifecycle_explained", "{}"))
    rows = store.query("SELECT lifecycle, segment, customers, revenue FROM lifecycle")
    states = []
    for state, name in LIFECYCLE_NAMES.items():
        here = [row for row in rows if row["lifecycle"] == state]
        states.append({"state": state, "name": name, "explained": explained.get(state, ""),
                       "customers": sum(row["customers"] for row in here), "revenue": sum(row["revenue"] or 0.0 for row in here),
                       "by_segment": {row["segment"]: row["customers"] for row in here}})
    return states


def health() -> dict:
    store = get_store()
    version = store.version()
    created = dt.datetime.fromisoformat(version.meta["created_at"])
    age = (dt.datetime.now(dt.timezone.utc) - created).total_seconds()
    return {"status": "ok", "store": {**version.meta, "age_seconds": round(age)}, "problem_with_newer_file": store.last_problem}


def _optional_number(body: dict, field: str) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1e9 < value < 1e9:
        raise BadRequest(f"{field} must be a number, got {value!r:.40}")
    return float(value)


EVENT_FIELDS = ("customer_id", "item_id", "type", "timestamp", "session_id", "quantity", "price")


def record_event(body, *, key_name: str) -> int:
    """Store one event posted with the API key ``key_name``; its id."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with customer_id, item_id, type and timestamp")
    unknown = sorted(set(body) - set(EVENT_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; fields are {', '.join(EVENT_FIELDS)}")
    customer_id = check_id(body.get("customer_id"), "customer_id")
    item_id = check_id(body.get("item_id"), "item_id")
    kind = check_choice(body.get("type"), EVENT_TYPES, "type")
    session_id = check_id(body["session_id"], "session_id") if body.get("session_id") is not None else None
    quantity, price = _optional_number(body, "quantity"), _optional_number(body, "price")
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
        event_id = connection.execute(
            "INSERT INTO events (customer_id, item_id, type, timestamp, key_name, session_id, quantity, price) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (customer_id, item_id, kind, stamp, key_name, session_id, quantity, price)).lastrowid
        for column, value, bound in (("customer_id", customer_id, MAX_EVENTS_PER_CUSTOMER), ("key_name", key_name, MAX_EVENTS_PER_KEY)):
            connection.execute(f"DELETE FROM events WHERE {column} = ? AND id <= (SELECT id FROM events WHERE {column} = ? "
                               "ORDER BY id DESC LIMIT 1 OFFSET ?)", (value, value, bound))
    return event_id
