"""Audience definitions: rules over the published customer table, combined with "all" or "any", compiled to parameterised SQL.

A definition is plain JSON, saved with an audience and copied into each campaign made from it:

    {"match": "all", "rules": [{"field": "lifecycle", "in": ["lapsed"]}, {"field": "total_spend", "min": 1000},
                               {"field": "bought", "group": "candles", "from": "2011-01-01", "to": "2011-06-30", "negate": true},
                               {"field": "affinity", "item": "85123A", "top": 500}]}

Plain Python and SQL (no Flask): the views and the tests share it. Customers on the
suppression list are left out by ``webapp.audiences``, after the rules, for every audience.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re

CHOICE_FIELDS = {"segment": "Value segment", "lifecycle": "Lifecycle state", "country": "Country"}
RANGE_FIELDS = {"clv": "Predicted 12-month value", "p_alive": "Chance still a customer (0 to 1)",
                "days_since_last": "Days since the last purchase", "total_spend": "Total spend so far"}
BOUGHT, AFFINITY = "bought", "affinity"
LIFECYCLE_NAMES = {"new": "New", "active": "Active", "at_risk": "At risk", "lapsed": "Lapsed"}  # segmentation.lifecycle's states
MATCHES = {"all": " AND ", "any": " OR "}
MAX_RULES = 20
MAX_CHOICES = 200
KEY_PATTERN = re.compile(r"[^\x00-\x1f\x7f]{1,100}")  # item ids and group names: any printable text up to 100 characters


class AudienceError(ValueError):
    """Everything wrong with a definition, in one message."""


def parse(data) -> dict:
    """A checked, normalised definition from ``data`` (a dict or its JSON); every problem is reported at once."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            raise AudienceError("the audience definition is not valid JSON") from None
    if not isinstance(data, dict):
        raise AudienceError("an audience definition is an object with match and rules")
    problems: list[str] = []
    match = data.get("match", "all")
    if match not in MATCHES:
        problems.append("match must be all or any")
    rules = data.get("rules")
    if not isinstance(rules, list) or not 1 <= len(rules) <= MAX_RULES:
        raise AudienceError("; ".join(problems + [f"an audience needs 1 to {MAX_RULES} rules"]))
    checked = []
    for position, rule in enumerate(rules, start=1):
        try:
            checked.append(_rule(rule))
        except AudienceError as error:
            problems.append(f"rule {position}: {error}")
    if problems:
        raise AudienceError("; ".join(problems))
    return {"match": match, "rules": checked}


def _rule(rule) -> dict:
    if not isinstance(rule, dict):
        raise AudienceError("a rule is an object with a field")
    field = rule.get("field")
    if field in CHOICE_FIELDS:
        values = rule.get("in")
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_CHOICES or not all(isinstance(v, str) and KEY_PATTERN.fullmatch(v) for v in values):
            raise AudienceError(f"choose 1 to {MAX_CHOICES} values of {CHOICE_FIELDS[field].lower()}")
        return {"field": field, "in": sorted(set(values))}
    if field in RANGE_FIELDS:
        low, high = _number(rule.get("min"), field, "min"), _number(rule.get("max"), field, "max")
        if low is None and high is None:
            raise AudienceError(f"give a lowest or a highest {RANGE_FIELDS[field].lower()}")
        if low is not None and high is not None and low > high:
            raise AudienceError(f"the lowest {RANGE_FIELDS[field].lower()} ({low:g}) is above the highest ({high:g})")
        return {"field": field, "min": low, "max": high}
    if field == BOUGHT:
        item, group = _key(rule, "item"), _key(rule, "group")
        if (item is None) == (group is None):
            raise AudienceError("a purchase rule names an item or a group (one of them)")
        start, end = _date(rule.get("from"), "from"), _date(rule.get("to"), "to")
        if start and end and start > end:
            raise AudienceError(f"the period starts ({start}) after it ends ({end})")
        return {"field": BOUGHT, "item": item, "group": group, "from": start, "to": end, "negate": bool(rule.get("negate", False))}
    if field == AFFINITY:
        item, group = _key(rule, "item"), _key(rule, "group")
        if (item is None) == (group is None):
            raise AudienceError("an affinity rule names an item or a group (one of them)")
        top, share = rule.get("top"), rule.get("share")
        if (top is None) == (share is None):
            raise AudienceError("an affinity rule takes the top number of customers or the top share (one of them)")
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 1):
            raise AudienceError("the top number of customers must be a whole number of 1 or more")
        if share is not None and (not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share <= 1):
            raise AudienceError("the top share must be above 0% and at most 100%")
        return {"field": AFFINITY, "item": item, "group": group, "top": top, "share": share}
    known = ", ".join([*CHOICE_FIELDS, *RANGE_FIELDS, BOUGHT, AFFINITY])
    raise AudienceError(f"unknown field {str(field)[:40]!r} (fields: {known})")


def _number(value, field: str, bound: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AudienceError(f"the {bound} of {RANGE_FIELDS[field].lower()} must be a number")
    return float(value)


def _key(rule: dict, name: str) -> str | None:
    value = rule.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not KEY_PATTERN.fullmatch(value):
        raise AudienceError(f"the {name} must be text of 1 to 100 printable characters")
    return value


def _date(value, name: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise AudienceError(f"the '{name}' date must be YYYY-MM-DD, got {str(value)[:20]!r}") from None


def where(definition: dict) -> tuple[str, list]:
    """SQL condition on the store's ``customers`` table (aliased ``c``) and its parameters."""
    parts, parameters = [], []
    for rule in definition["rules"]:
        sql, values = _condition(rule)
        parts.append(f"({sql})")
        parameters += values
    return MATCHES[definition["match"]].join(parts), parameters


def _condition(rule: dict) -> tuple[str, list]:
    field = rule["field"]
    if field in CHOICE_FIELDS:
        return f"c.{field} IN ({', '.join('?' for _ in rule['in'])})", list(rule["in"])
    if field in RANGE_FIELDS:
        bounds = [(f"c.{field} >= ?", rule["min"]), (f"c.{field} <= ?", rule["max"])]
        kept = [(sql, value) for sql, value in bounds if value is not None]
        return " AND ".join(sql for sql, _ in kept), [value for _, value in kept]
    if field == BOUGHT:
        items, values = ("p.item_id = ?", [rule["item"]]) if rule["item"] else (
            "p.item_id IN (SELECT item_id FROM items WHERE item_group = ?)", [rule["group"]])
        period = [(sql, value) for sql, value in (("p.day >= ?", rule["from"]), ("p.day <= ?", rule["to"])) if value]
        condition = " AND ".join([items, *(sql for sql, _ in period)])
        found = f"c.customer_id IN (SELECT p.customer_id FROM purchases_by_day p WHERE {condition})"
        return (f"NOT {found}" if rule["negate"] else found), values + [value for _, value in period]
    kind, key = ("item", rule["item"]) if rule["item"] else ("group", rule["group"])
    if rule["top"] is not None:
        return "c.customer_id IN (SELECT customer_id FROM affinity WHERE kind = ? AND key = ? AND rank <= ?)", [kind, key, rule["top"]]
    return ("c.customer_id IN (SELECT customer_id FROM affinity WHERE kind = ? AND key = ? AND "
            "rank <= (SELECT MAX(1, CAST(ROUND(? * COUNT(*)) AS INTEGER)) FROM customers))"), [kind, key, rule["share"]]


def describe(definition: dict) -> str:
    """The definition in words, for lists and exports."""
    def words(rule: dict) -> str:
        field = rule["field"]
        if field in CHOICE_FIELDS:
            values = [LIFECYCLE_NAMES.get(value, value).lower() for value in rule["in"]] if field == "lifecycle" else rule["in"]
            return f"{CHOICE_FIELDS[field].lower()} is {' or '.join(values)}"
        if field in RANGE_FIELDS:
            name = RANGE_FIELDS[field].lower()
            if rule["min"] is not None and rule["max"] is not None:
                return f"{name} from {rule['min']:g} to {rule['max']:g}"
            return f"{name} {'at least' if rule['min'] is not None else 'at most'} {rule['min'] if rule['min'] is not None else rule['max']:g}"
        what = f"item {rule['item']}" if rule["item"] else f"group {rule['group']}"
        if field == BOUGHT:
            period = "".join([f" from {rule['from']}" if rule["from"] else "", f" to {rule['to']}" if rule["to"] else ""])
            return f"{'did not buy' if rule['negate'] else 'bought'} {what}{period}"
        top = f"top {rule['top']:,}" if rule["top"] is not None else f"top {rule['share']:.0%}"
        return f"{top} customers most likely to buy {what}"

    return f" {'and' if definition['match'] == 'all' else 'or'} ".join(words(rule) for rule in definition["rules"])
