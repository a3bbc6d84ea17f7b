"""Merchandising rules: what a request may ask to leave out, and what an editor sets for the whole store.

Per request: exclude item ids, keep to (or leave out) item groups, price bounds. Store-wide, in the
app's database: blocked items (out of stock, recalled) never appear anywhere; promoted items take a
fixed share of the slots of ``for_you`` and ``discover``. Plain Python: the API, the pages and the
campaign exports all read their lists through ``webapp.serving``, which applies these.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from webapp.errors import BadRequest

BLOCK, PROMOTE = "block", "promote"
RULES = (BLOCK, PROMOTE)
PROMOTED_SOURCE = "promoted"
DEFAULT_PROMOTED_SHARE = 0.2
MAX_PROMOTED_SHARE = 0.5  # promotions never crowd out most of a shopper's list
MAX_LISTED_CHARACTERS = 2000  # of a parameter listing ids or groups
GROUP_PATTERN = re.compile(r"[a-z0-9][a-z0-9\-]{0,63}")  # coldstart.content names groups this way
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
GROUP_NAMES = "group names (lower case letters, digits and '-')"


@dataclass(frozen=True, kw_only=True)
class Filters:
    """What a list may hold. ``groups`` empty: any group."""
    exclude_items: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    exclude_groups: frozenset[str] = frozenset()
    min_price: float | None = None
    max_price: float | None = None

    def needs_catalogue(self) -> bool:
        """Whether the items' groups or prices must be read to apply these."""
        return bool(self.groups or self.exclude_groups or self.min_price is not None or self.max_price is not None)

    def allows(self, item_id: str, group: str | None, price: float | None) -> bool:
        """``group`` and ``price`` from the store's catalogue (None for an item it does not hold: kept out by group or price rules)."""
        if item_id in self.exclude_items:
            return False
        if self.groups and group not in self.groups or self.exclude_groups and group in self.exclude_groups:
            return False
        if self.min_price is not None and (price is None or price < self.min_price):
            return False
        return not (self.max_price is not None and (price is None or price > self.max_price))

    def sql(self, column_prefix: str = "") -> tuple[str, list]:
        """A WHERE condition on the items table (``column_prefix`` such as ``i.``) and its parameters."""
        clauses, parameters = ["1 = 1"], []
        for column, values, negated in (("item_id", self.exclude_items, True), ("item_group", self.groups, False),
                                        ("item_group", self.exclude_groups, True)):
            if values:
                clauses.append(f"{column_prefix}{column} {'NOT IN' if negated else 'IN'} ({', '.join('?' for _ in values)})")
                parameters += sorted(values)
        for bound, operator in ((self.min_price, ">="), (self.max_price, "<=")):
            if bound is not None:
                clauses.append(f"{column_prefix}price {operator} ?")
                parameters.append(bound)
        return " AND ".join(clauses), parameters

    def and_blocked(self, blocked: frozenset[str]) -> Filters:
        return Filters(exclude_items=self.exclude_items | blocked, groups=self.groups, exclude_groups=self.exclude_groups,
                       min_price=self.min_price, max_price=self.max_price)


NO_FILTERS = Filters()


def _listed(value: str | None, name: str, pattern: re.Pattern, what: str) -> frozenset[str]:
    if value is None or value == "":
        return frozenset()
    if len(value) > MAX_LISTED_CHARACTERS:
        raise BadRequest(f"{name} is at most {MAX_LISTED_CHARACTERS:,} characters, got {len(value):,}")
    parts = value.split(",")
    for part in parts:
        if not pattern.fullmatch(part):
            raise BadRequest(f"{name} must be {what} separated by commas, got {part!r:.80}")
    return frozenset(parts)


def _price(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        price = float(value)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {value!r:.40}") from None
    if not 0 <= price < 1e9 or math.isnan(price):
        raise BadRequest(f"{name} must be from 0 to 1e9, got {value!r:.40}")
    return price


def filters_from(arguments) -> Filters:
    """The filters a request asks for in its query string; one clear 400 for a malformed one."""
    return Filters(
        exclude_items=_listed(arguments.get("exclude_items"), "exclude_items", ID_PATTERN, "item ids"),
        groups=_listed(arguments.get("groups"), "groups", GROUP_PATTERN, GROUP_NAMES),
        exclude_groups=_listed(arguments.get("exclude_groups"), "exclude_groups", GROUP_PATTERN, GROUP_NAMES),
        min_price=_price(arguments.get("min_price"), "min_price"), max_price=_price(arguments.get("max_price"), "max_price"))


@dataclass(frozen=True)
class StoreRules:
    """What an editor set for the whole store."""
    blocked: frozenset[str] = frozenset()
    promoted: tuple[str, ...] = ()  # oldest promotion first
    promoted_share: float = DEFAULT_PROMOTED_SHARE


def store_rules(state) -> StoreRules:
    rows = state.query("SELECT item_id, rule FROM item_rules ORDER BY set_at, item_id")
    share = state.query("SELECT value FROM settings WHERE key = 'promoted_share'")
    return StoreRules(blocked=frozenset(row["item_id"] for row in rows if row["rule"] == BLOCK),
                      promoted=tuple(row["item_id"] for row in rows if row["rule"] == PROMOTE),
                      promoted_share=float(share[0]["value"]) if share else DEFAULT_PROMOTED_SHARE)


def listed_rules(state) -> list[dict]:
    return [dict(row) for row in state.query("SELECT item_id, rule, note, set_by, set_at FROM item_rules ORDER BY rule, set_at")]


def set_rule(state, item_id: str, rule: str, note: str, *, by: str) -> None:
    """Block or promote an item (a new rule for an item replaces its old one)."""
    if not isinstance(item_id, str) or not ID_PATTERN.fullmatch(item_id):
        raise ValueError(f"an item id is 1-64 letters, digits, '.', '_' or '-', got {item_id!r:.80}")
    if rule not in RULES:
        raise ValueError(f"a rule is {' or '.join(RULES)}, got {rule!r:.40}")
    if len(note) > 200:
        raise ValueError("a note is at most 200 characters")
    state.write("INSERT INTO item_rules (item_id, rule, note, set_by) VALUES (?, ?, ?, ?) ON CONFLICT (item_id) DO UPDATE SET "
                "rule = excluded.rule, note = excluded.note, set_by = excluded.set_by, set_at = excluded.set_at",
                (item_id, rule, note, by))


def remove_rule(state, item_id: str) -> None:
    if state.write_count("DELETE FROM item_rules WHERE item_id = ?", (item_id,)) == 0:
        raise ValueError(f"item {item_id!r:.80} has no rule")


def set_promoted_share(state, value: str) -> float:
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the promoted share is a number from 0 to {MAX_PROMOTED_SHARE}, got {value!r:.40}") from None
    if not 0 <= share <= MAX_PROMOTED_SHARE:
        raise ValueError(f"the promoted share is from 0 to {MAX_PROMOTED_SHARE}, got {share:g}")
    state.write("INSERT INTO settings (key, value) VALUES ('promoted_share', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (repr(share),))
    return share
