"""Audience builder for marketers: rules over the customers, a live count and revenue, saved audiences, and the suppression list.

The rules are ``webapp.audience_rules``; this module runs them on the published store
and always leaves out the customers on the suppression list (uploaded opt-outs), so no
audience, preview or campaign export includes them.
"""

from __future__ import annotations

import csv
import io
import json

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for

from webapp import audit, serving
from webapp.audit import actor as current_actor
from webapp.audience_rules import AFFINITY, BOUGHT, CHOICE_FIELDS, LIFECYCLE_NAMES, RANGE_FIELDS, AudienceError, describe, parse, where
from webapp.auth import requires
from webapp.errors import BadRequest
from webapp.state import get_state, get_store
from webapp.uploads import uploaded_text

blueprint = Blueprint("audiences", __name__, url_prefix="/audiences")
SAMPLE = 20
SUPPRESSED_PER_QUERY = 500  # ids per lookup, well under SQLite's limit on parameters
MAX_SUPPRESSED_UPLOAD = 200_000


def suppressed() -> set[str]:
    return {row["customer_id"] for row in get_state().query("SELECT customer_id FROM suppressed")}


def members(definition: dict) -> dict[str, tuple[str, str | None]]:
    """customer_id -> (segment, country) of everyone the definition selects, in customer order, opted-out customers left out."""
    condition, parameters = where(definition)
    rows = get_store().query(f"SELECT c.customer_id, c.segment, c.country FROM customers c WHERE {condition} ORDER BY c.customer_id",
                             parameters)
    left_out = suppressed()
    return {row["customer_id"]: (row["segment"], row["country"]) for row in rows if row["customer_id"] not in left_out}


def preview(definition: dict) -> dict:
    """How many customers the definition selects, their revenue so far and expected value, the biggest spenders, and how many
    opted out. Counted in SQL, so a preview costs the same for any audience size; the suppressed are looked up by id."""
    condition, parameters = where(definition)
    store = get_store()
    by_segment = {row["segment"]: dict(row) for row in store.query(
        f"SELECT c.segment, COUNT(*) AS customers, SUM(c.total_spend) AS revenue, SUM(c.clv) AS clv FROM customers c "
        f"WHERE {condition} GROUP BY c.segment", parameters)}
    left_out = sorted(suppressed())
    matched = []
    for start in range(0, len(left_out), SUPPRESSED_PER_QUERY):
        chunk = left_out[start:start + SUPPRESSED_PER_QUERY]
        matched += store.query(f"SELECT c.customer_id, c.segment, c.total_spend, c.clv FROM customers c WHERE ({condition}) "
                               f"AND c.customer_id IN ({', '.join('?' for _ in chunk)})", [*parameters, *chunk])
    for row in matched:
        here = by_segment[row["segment"]]
        here["customers"] -= 1
        here["revenue"] -= row["total_spend"] or 0.0
        here["clv"] -= row["clv"] or 0.0
    biggest = store.query(f"SELECT c.customer_id, c.segment, c.lifecycle, c.country, c.total_spend, c.clv FROM customers c "
                          f"WHERE {condition} ORDER BY c.total_spend DESC, c.customer_id LIMIT ?", [*parameters, SAMPLE + len(matched)])
    gone = {row["customer_id"] for row in matched}
    return {"customers": sum(row["customers"] for row in by_segment.values()),
            "revenue": sum(row["revenue"] or 0.0 for row in by_segment.values()),
            "clv": sum(row["clv"] or 0.0 for row in by_segment.values()), "suppressed": len(matched),
            "by_segment": {segment["segment"]: by_segment[segment["segment"]]["customers"] for segment in serving.segments()
                           if by_segment.get(segment["segment"], {}).get("customers")},
            "sample": [dict(row) for row in biggest if row["customer_id"] not in gone][:SAMPLE]}


def from_form(form) -> dict:
    """A definition from the builder's fields: each filled part of the form is one rule."""
    rules: list[dict] = []
    problems: list[str] = []
    for field in CHOICE_FIELDS:
        chosen = [value for value in form.getlist(field) if value]
        if chosen:
            rules.append({"field": field, "in": chosen})
    for field, name in RANGE_FIELDS.items():
        bounds = {}
        for bound in ("min", "max"):
            text = form.get(f"{field}_{bound}", "").strip()
            if text:
                try:
                    bounds[bound] = float(text)
                except ValueError:
                    problems.append(f"the {'lowest' if bound == 'min' else 'highest'} {name.lower()} must be a number, got {text[:20]!r}")
        if bounds:
            rules.append({"field": field, **bounds})
    target = form.get("bought_target", "").strip()
    if target:
        rules.append({"field": BOUGHT, form.get("bought_kind", "item"): target, "from": form.get("bought_from", "").strip(),
                      "to": form.get("bought_to", "").strip(), "negate": form.get("bought_mode") == "not_bought"})
    target = form.get("affinity_target", "").strip()
    if target:
        rule: dict = {"field": AFFINITY, form.get("affinity_kind", "item"): target}
        amount, unit = form.get("affinity_amount", "").strip(), form.get("affinity_unit", "customers")
        try:
            if unit == "percent":
                rule["share"] = float(amount) / 100
            else:
                rule["top"] = int(amount)
        except ValueError:
            problems.append(f"the affinity rule needs a number of customers or a percentage, got {amount[:20]!r}")
        rules.append(rule)
    for name in ("bought_kind", "affinity_kind"):
        if form.get(name, "item") not in ("item", "group"):
            problems.append(f"{name} must be item or group")
    if problems:
        raise BadRequest("; ".join(problems))
    if not rules:
        raise BadRequest("fill in at least one rule")
    try:
        return parse({"match": form.get("match", "all"), "rules": rules})
    except AudienceError as error:
        raise BadRequest(str(error)) from None


def _audience(audience_id: int) -> dict:
    audience = get_state().row("audiences", audience_id, "audience")
    audience["definition"] = json.loads(audience["definition"])
    audience["described"] = describe(audience["definition"])
    return audience


def saved() -> list[dict]:
    audiences = [dict(row) for row in get_state().query("SELECT * FROM audiences ORDER BY name, id")]
    for audience in audiences:
        audience["described"] = describe(json.loads(audience["definition"]))
    return audiences


def _choices() -> dict:
    store = get_store()
    return {"segment": [row["segment"] for row in store.query("SELECT segment FROM segments ORDER BY mean_clv DESC")],
            "lifecycle": list(LIFECYCLE_NAMES.items()),
            "country": [row["country"] for row in store.query("SELECT DISTINCT country FROM customers WHERE country IS NOT NULL ORDER BY country")]}


def _builder(form, *, audience: dict | None = None, status: int = 200, error: str | None = None):
    result = None
    if error is None and any(value for key, value in form.items() if key not in ("csrf_token", "name", "match")):
        try:
            result = preview(from_form(form))
        except BadRequest as problem:
            error, status = str(problem), 400
    page = render_template("audiences.html", audiences=saved(), fields=form.to_dict(flat=False), choices=_choices(),
                           range_fields=RANGE_FIELDS, result=result, error=error, audience=audience, suppressed=len(suppressed()))
    return page, status


@blueprint.get("/")
def index():
    """The builder: the rules as query parameters give the live count, revenue and a sample."""
    return _builder(request.args)


def _named(form) -> tuple[str, dict]:
    """The name and definition the save and change forms give, checked."""
    name = form.get("name", "").strip()
    definition = from_form(form)
    if not 1 <= len(name) <= 100:
        raise BadRequest("give the audience a name of 1 to 100 characters")
    return name, definition


@blueprint.get("/count")
def count():
    """The builder's live count (static/audiences.js asks as the rules change): JSON, a 400 with the reason for bad rules."""
    try:
        found = preview(from_form(request.args))
    except BadRequest as error:
        return jsonify({"error": str(error)}), 400
    money = current_app.jinja_env.filters["money"]
    text = f"{found['customers']:,} customers, who have spent {money(found['revenue'])} so far"
    if found["suppressed"]:
        text += f" ({found['suppressed']:,} more match but opted out)"
    return jsonify({"customers": found["customers"], "revenue": found["revenue"], "suppressed": found["suppressed"], "text": text})


@blueprint.post("/")
@requires("editor")
def create():
    try:
        name, definition = _named(request.form)
    except BadRequest as error:
        return _builder(request.form, status=400, error=str(error))
    audience_id = get_state().write("INSERT INTO audiences (name, definition, created_by) VALUES (?, ?, ?)",
                                    (name, json.dumps(definition), current_actor()))
    audit.record(get_state(), "audience-create", f"audience {audience_id}", detail=describe(definition)[:500])
    return redirect(url_for("audiences.show", audience_id=audience_id))


@blueprint.get("/<int:audience_id>")
def show(audience_id: int):
    audience = _audience(audience_id)
    return render_template("audience.html", audience=audience, result=preview(audience["definition"]),
                           fields={"name": [audience["name"]], **form_values(audience["definition"])}, choices=_choices(),
                           range_fields=RANGE_FIELDS)


@blueprint.post("/<int:audience_id>")
@requires("editor")
def update(audience_id: int):
    audience = _audience(audience_id)
    try:
        name, definition = _named(request.form)
    except BadRequest as error:
        return _builder(request.form, audience=audience, status=400, error=str(error))
    get_state().write("UPDATE audiences SET name = ?, definition = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?",
                      (name, json.dumps(definition), audience_id))
    audit.record(get_state(), "audience-update", f"audience {audience_id}", detail=describe(definition)[:500])
    return redirect(url_for("audiences.show", audience_id=audience_id))


def form_values(definition: dict) -> dict[str, list[str]]:
    """The builder's fields that give ``definition`` (so a saved audience opens in the builder to be changed)."""
    values: dict[str, list[str]] = {"match": [definition["match"]]}
    for rule in definition["rules"]:
        field = rule["field"]
        if field in CHOICE_FIELDS:
            values[field] = list(rule["in"])
        elif field in RANGE_FIELDS:
            for bound in ("min", "max"):
                if rule[bound] is not None:
                    values[f"{field}_{bound}"] = [f"{rule[bound]:g}"]
        elif field == BOUGHT:
            values.update(bought_kind=["item" if rule["item"] else "group"], bought_target=[rule["item"] or rule["group"]],
                          bought_from=[rule["from"] or ""], bought_to=[rule["to"] or ""],
                          bought_mode=["not_bought" if rule["negate"] else "bought"])
        else:
            values.update(affinity_kind=["item" if rule["item"] else "group"], affinity_target=[rule["item"] or rule["group"]],
                          affinity_amount=[str(rule["top"]) if rule["top"] is not None else f"{100 * rule['share']:g}"],
                          affinity_unit=["customers" if rule["top"] is not None else "percent"])
    return values


# ------------------------------------------------------------------ suppression list

@blueprint.get("/suppression")
def suppression():
    return render_template("suppression.html", count=len(suppressed()))


@blueprint.post("/suppression")
@requires("editor")
def upload_suppression():
    """A CSV with a customer_id column: every id joins the list (ids already on it stay); a bad file changes nothing."""
    text, filename = uploaded_text("customers", "choose a CSV file with a customer_id column")
    reader = csv.DictReader(io.StringIO(text))
    if "customer_id" not in [name.strip().lower() for name in reader.fieldnames or []]:
        raise BadRequest("the header must name a customer_id column")
    reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
    ids, problems = [], []
    for line, row in enumerate(reader, start=2):
        customer_id = (row.get("customer_id") or "").strip()
        if not serving.ID_PATTERN.fullmatch(customer_id):
            problems.append(f"line {line}: customer_id must be 1-64 letters, digits, '.', '_' or '-', got {customer_id[:20]!r}")
        ids.append(customer_id)
        if len(ids) > MAX_SUPPRESSED_UPLOAD:
            raise BadRequest(f"more than {MAX_SUPPRESSED_UPLOAD:,} rows: split the file")
    if problems:
        raise BadRequest("; ".join(problems[:20]) + (f" (and {len(problems) - 20:,} more)" if len(problems) > 20 else ""))
    if not ids:
        raise BadRequest("the file has a header but no customers")
    connection = get_state().connection()
    with connection:
        before = connection.execute("SELECT COUNT(*) FROM suppressed").fetchone()[0]
        connection.executemany("INSERT OR IGNORE INTO suppressed (customer_id, added_by) VALUES (?, ?)",
                               [(customer_id, current_actor()) for customer_id in ids])
        added = connection.execute("SELECT COUNT(*) FROM suppressed").fetchone()[0] - before
    audit.record(get_state(), "suppression-upload", "suppression list", detail=f"{filename[:80]}: {len(ids):,} rows, {added:,} new")
    flash(f"{added:,} customers added to the suppression list ({len(ids) - added:,} were on it already)")
    return redirect(url_for("audiences.suppression"))
