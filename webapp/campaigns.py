"""Campaign builder, CSV export and results for marketers.

A campaign targets value segments; each customer is assigned by a salted hash
to the personalised variant (their routed list) or the control (trending for
their country), so a re-export gives the same split. Results come from an
uploaded CSV of purchases after the send, or from the store's own
transactions once a newer run has them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import secrets

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, stream_with_context, url_for

from webapp import audiences, audit, experiments, serving
from webapp.audience_rules import describe
from webapp.auth import requires
from webapp.errors import BadRequest, Conflict
from webapp.exports import spreadsheet_safe
from webapp.state import get_state, get_store
from webapp.uploads import uploaded_text

blueprint = Blueprint("campaigns", __name__, url_prefix="/campaigns")
PREVIEW_ROWS = 20
MAX_LIST = 20


DRAFT, EXPORTED, RESULTS, ARCHIVED = "draft", "exported", "results", "archived"


def _campaign(campaign_id: int):
    campaign = _with_audience(get_state().row("campaigns", campaign_id, "campaign"))
    has_results = bool(get_state().query("SELECT 1 FROM campaign_results WHERE campaign_id = ? LIMIT 1", (campaign_id,)))
    campaign["status"] = campaign_status(campaign, has_results)
    return campaign


def campaign_status(campaign: dict, has_results: bool) -> str:
    """Draft until exported, then exported, then results once any are in; archived above all."""
    if campaign["archived_at"]:
        return ARCHIVED
    return RESULTS if has_results else EXPORTED if campaign["exported_at"] else DRAFT


def _with_audience(campaign: dict) -> dict:
    """The campaign with its audience definition (campaigns made before audiences targeted whole segments) in words."""
    segments = json.loads(campaign["segments"])
    campaign["definition"] = (json.loads(campaign["audience"]) if campaign.get("audience")
                              else {"match": "all", "rules": [{"field": "segment", "in": segments}]})
    campaign["described"] = describe(campaign["definition"])
    campaign["segments_targeted"] = [] if campaign.get("audience_id") else segments
    return campaign


def _read_form(form) -> dict:
    """The builder's fields, checked; every problem is reported at once. The audience is a saved one or whole segments."""
    problems = []
    name = form.get("name", "").strip()
    if not 1 <= len(name) <= 100:
        problems.append("give the campaign a name of 1 to 100 characters")
    definition, source = None, ""
    audience_id = form.get("audience", "").strip()
    if audience_id:
        rows = get_state().query("SELECT name, definition FROM audiences WHERE id = ?", (audience_id,)) if audience_id.isdigit() else []
        if rows:
            definition, source = json.loads(rows[0]["definition"]), f"audience {rows[0]['name']}"
        else:
            problems.append("choose one of the saved audiences")
    else:
        known = [row["segment"] for row in get_store().query("SELECT segment FROM segments")]
        chosen = form.getlist("segments")
        if not chosen or any(segment not in known for segment in chosen):
            problems.append(f"choose a saved audience or one or more of the segments {', '.join(sorted(known))}")
        else:
            definition, source = {"match": "all", "rules": [{"field": "segment", "in": sorted(chosen)}]}, f"segments {', '.join(chosen)}"
    list_name = form.get("list", "")
    if list_name not in serving.LISTS:
        problems.append(f"the list must be one of {', '.join(serving.LISTS)}")
    try:
        n = int(form.get("n", ""))
        if not 1 <= n <= MAX_LIST:
            raise ValueError
    except ValueError:
        problems.append(f"the number of items must be a whole number from 1 to {MAX_LIST}")
        n = 0
    try:
        control_share = float(form.get("control_share", "")) / 100
        if not 0.01 <= control_share <= 0.5:
            raise ValueError
    except ValueError:
        problems.append("the control share must be a percentage from 1 to 50")
        control_share = 0.0
    if problems:
        raise BadRequest("; ".join(problems))
    segments = next((rule["in"] for rule in definition["rules"] if rule["field"] == "segment"), [])
    return {"name": name, "segments": segments, "definition": definition, "audience_id": int(audience_id) if audience_id else None,
            "source": source, "list": list_name, "n": n, "control_share": control_share}


def audience(campaign: dict) -> dict[str, tuple[str, str | None, str]]:
    """customer_id -> (segment, country, variant) for everyone the campaign's audience selects (never a suppressed customer)."""
    return {customer_id: (segment, country, experiments.variant(customer_id, campaign["salt"], campaign["control_share"]))
            for customer_id, (segment, country) in audiences.members(campaign["definition"]).items()}


def export_rows(campaign: dict, members: dict | None = None, limit: int | None = None):
    """Rows of the export: customer_id, segment, variant, then item_k and item_k_description for k = 1..n.

    ``members``: the campaign's ``audience``, when the caller already has it.
    """
    n = campaign["n"]
    yield ["customer_id", "segment", "variant"] + [column for k in range(1, n + 1) for column in (f"item_{k}", f"item_{k}_description")]
    trending_by_country: dict = {}
    blocked = serving.store_filters()
    for count, (customer_id, (segment, country, variant)) in enumerate((members or audience(campaign)).items()):
        if limit is not None and count >= limit:
            return
        if variant == experiments.CONTROL:
            if country not in trending_by_country:
                trending_by_country[country] = serving.trending(n, country, blocked)[0]
            items = trending_by_country[country]
        else:
            items = serving.recommendations(customer_id, campaign["list"], n, None)["items"]
        cells = [value for item in items for value in (item["item_id"], item["description"] or "")]
        yield [customer_id, segment, variant] + cells + [""] * (2 * n - len(cells))


def _builder_page(form, error: str | None = None, status: int = 200):
    shown = "all" if request.args.get("show") == "all" else "current"
    campaigns = [_with_audience(dict(row)) for row in get_state().query(
        "SELECT c.*, EXISTS (SELECT 1 FROM campaign_results r WHERE r.campaign_id = c.id) AS has_results FROM campaigns c "
        "WHERE c.archived_at IS NULL OR ? ORDER BY c.id DESC", (shown == "all",))]
    for campaign in campaigns:
        campaign["status"] = campaign_status(campaign, campaign["has_results"])
    return render_template("campaigns.html", campaigns=campaigns, segments=serving.segments(), audiences=audiences.saved(),
                           lists=serving.LISTS, max_list=MAX_LIST, form=form, error=error, shown=shown), status


@blueprint.get("/")
def index():
    return _builder_page(request.args)


@blueprint.post("/")
@requires("editor")
def create():
    try:
        fields = _read_form(request.form)
    except BadRequest as error:
        return _builder_page(request.form, error=str(error), status=400)
    campaign_id = _insert(fields, get_store().version().meta)
    audit.record(get_state(), "campaign-create", f"campaign {campaign_id}", detail=fields["source"][:500])
    return redirect(url_for("campaigns.show", campaign_id=campaign_id))


def _insert(fields: dict, meta: dict) -> int:
    """A new draft campaign with its own salt (so its split is its own), on the store's current data."""
    return get_state().write(
        "INSERT INTO campaigns (name, segments, audience, audience_id, list, n, control_share, salt, store_run, as_of) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (fields["name"], json.dumps(fields["segments"]), json.dumps(fields["definition"]), fields["audience_id"], fields["list"],
         fields["n"], fields["control_share"], secrets.token_hex(8), meta["run_id"], meta["as_of"]))


@blueprint.post("/<int:campaign_id>/edit")
@requires("editor")
def edit(campaign_id: int):
    """While a draft (never exported), everything may change; its split is kept."""
    campaign = _campaign(campaign_id)
    if campaign["status"] != DRAFT:
        raise Conflict(f"campaign {campaign_id} is {campaign['status']}: only a draft can be changed; duplicate it to change a copy")
    fields = _read_form(request.form)
    get_state().write("UPDATE campaigns SET name = ?, segments = ?, audience = ?, audience_id = ?, list = ?, n = ?, control_share = ?, "
                      "updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?",
                      (fields["name"], json.dumps(fields["segments"]), json.dumps(fields["definition"]), fields["audience_id"], fields["list"],
                       fields["n"], fields["control_share"], campaign_id))
    audit.record(get_state(), "campaign-edit", f"campaign {campaign_id}", detail=fields["source"][:500])
    return redirect(url_for("campaigns.show", campaign_id=campaign_id))


@blueprint.post("/<int:campaign_id>/duplicate")
@requires("editor")
def duplicate(campaign_id: int):
    campaign = _campaign(campaign_id)
    fields = {**campaign, "name": f"Copy of {campaign['name']}"[:100], "segments": json.loads(campaign["segments"])}
    copy_id = _insert(fields, get_store().version().meta)
    audit.record(get_state(), "campaign-duplicate", f"campaign {copy_id}", detail=f"copy of campaign {campaign_id}")
    return redirect(url_for("campaigns.show", campaign_id=copy_id))


@blueprint.post("/<int:campaign_id>/archive")
@requires("editor")
def archive(campaign_id: int):
    """Archived campaigns leave the list (kept, with their results, under "show archived"); archiving again restores."""
    campaign = _campaign(campaign_id)
    archiving = campaign["status"] != ARCHIVED
    get_state().write("UPDATE campaigns SET archived_at = CASE WHEN ? THEN strftime('%Y-%m-%dT%H:%M:%SZ', 'now') END WHERE id = ?",
                      (archiving, campaign_id))
    audit.record(get_state(), "campaign-archive" if archiving else "campaign-restore", f"campaign {campaign_id}")
    return redirect(url_for("campaigns.show", campaign_id=campaign_id))


PLAN_DEFAULT_UPLIFT = 10.0  # percent, relative: what the planner assumes until the marketer says what they hope for
RECENT_DAYS = 30


def recent_conversion(members: dict, as_of: str) -> float | None:
    """The share of ``members`` who bought in the RECENT_DAYS before ``as_of``: the planner's default expected conversion."""
    if not members:
        return None
    since = (dt.date.fromisoformat(as_of) - dt.timedelta(days=RECENT_DAYS)).isoformat()
    buyers = {row["customer_id"] for row in get_store().query(
        "SELECT DISTINCT customer_id FROM customer_days WHERE day >= ? AND day < ?", (since, as_of))}
    return sum(1 for customer_id in members if customer_id in buyers) / len(members)


def _plan(campaign: dict, members: dict, args) -> dict:
    """The test planner's figures for the page: from the form's expected conversion and hoped-for uplift (percent), else defaults."""
    recent = recent_conversion(members, campaign["as_of"])
    fields = {"baseline": args.get("baseline", "").strip(), "uplift": args.get("uplift", "").strip()}
    try:
        baseline = float(fields["baseline"]) / 100 if fields["baseline"] else (recent or 0.05)
        uplift = float(fields["uplift"]) / 100 if fields["uplift"] else PLAN_DEFAULT_UPLIFT / 100
        plan = experiments.TestPlan(baseline=baseline, relative_uplift=uplift, control_share=campaign["control_share"], audience=len(members))
    except ValueError as error:
        message = str(error) if "must" in str(error) else "the expected conversion and the uplift must be numbers (percent)"
        raise BadRequest(message) from None
    return {"baseline": baseline, "uplift": uplift, "recent": recent, "needed": plan.needed(), "detectable": plan.detectable(),
            "audience": len(members), "fields": fields}


@blueprint.get("/<int:campaign_id>")
def show(campaign_id: int):
    campaign = _campaign(campaign_id)
    members = audience(campaign)
    plan = _plan(campaign, members, request.args)
    sizes = {name: sum(1 for _, _, v in members.values() if v == name) for name in (experiments.TREATMENT, experiments.CONTROL)}
    preview = list(export_rows(campaign, members, limit=PREVIEW_ROWS))
    stored = [dict(row) for row in get_state().query(
        "SELECT id, source, rows, summary, created_at FROM campaign_results WHERE campaign_id = ? ORDER BY id DESC", (campaign_id,))]
    for row in stored:
        row["summary"] = json.loads(row["summary"])
    result = stored[0] if stored else None
    newer = get_store().version().meta["as_of"] > campaign["as_of"]
    return render_template("campaign.html", campaign=campaign, sizes=sizes, header=preview[0], preview=preview[1:],
                           result=result, history=stored[1:], newer_data=newer, plan=plan, segments=serving.segments(),
                           audiences=audiences.saved(), lists=serving.LISTS, max_list=MAX_LIST)


@blueprint.get("/<int:campaign_id>/export.csv")
@requires("editor")
def export(campaign_id: int):
    campaign = _campaign(campaign_id)
    if campaign["status"] == ARCHIVED:
        raise Conflict(f"campaign {campaign_id} is archived: restore it to export it")
    # Exported once, the split is what was sent: the campaign is no longer a draft to be changed.
    get_state().write("UPDATE campaigns SET exported_at = COALESCE(exported_at, strftime('%Y-%m-%dT%H:%M:%SZ', 'now')) WHERE id = ?",
                      (campaign_id,))
    audit.record(get_state(), "campaign-export", f"campaign {campaign_id}")

    def generate():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in export_rows(campaign):
            writer.writerow([spreadsheet_safe(cell) for cell in row])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    filename = f"campaign-{campaign_id}.csv"
    return Response(stream_with_context(generate()), mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _store_result(campaign: dict, source: str, purchases, rows: int, since: dt.date | None):
    """Results from ``purchases``, added to the campaign's history (earlier ones are kept); a file that says nothing is refused."""
    members = {customer_id: variant for customer_id, (_, _, variant) in audience(campaign).items()}
    if not purchases:
        raise BadRequest("the file has a header but no purchases: nothing to compute results from")
    if not any(customer_id in members for customer_id, _, _ in purchases):
        raise BadRequest(f"none of the {len(purchases):,} purchases is by a customer of this campaign's audience: is it the right file?")
    if since is not None and all(day is not None and day < since for _, day, _ in purchases):
        raise BadRequest(f"every purchase is dated before the campaign's date {since}: they cannot be its results")
    summary = experiments.results(members, purchases, since=since)
    get_state().write("INSERT INTO campaign_results (campaign_id, source, rows, summary) VALUES (?, ?, ?, ?)",
                      (campaign["id"], source, rows, json.dumps(summary)))
    audit.record(get_state(), "campaign-results", f"campaign {campaign['id']}", detail=f"{source}: {rows:,} rows")


@blueprint.post("/<int:campaign_id>/results")
@requires("editor")
def upload_results(campaign_id: int):
    campaign = _campaign(campaign_id)
    if request.form.get("use") == "transactions":
        since = dt.date.fromisoformat(campaign["as_of"])
        rows = get_store().query("SELECT customer_id, day, revenue FROM customer_days WHERE day >= ?", (since.isoformat(),))
        purchases = [(row["customer_id"], dt.date.fromisoformat(row["day"]), row["revenue"]) for row in rows]
        if not purchases:
            flash("the store has no transactions after the campaign's date yet; publish a newer run or upload a CSV")
            return redirect(url_for("campaigns.show", campaign_id=campaign_id))
        _store_result(campaign, "transactions", purchases, len(purchases), since)
        return redirect(url_for("campaigns.show", campaign_id=campaign_id))
    text, filename = uploaded_text("purchases", "choose a CSV file of purchases to upload")
    parsed = experiments.parse_purchases(text)
    if parsed.errors:
        shown = parsed.errors[:experiments.MAX_ERRORS_SHOWN]
        more = len(parsed.errors) - len(shown)
        return render_template("upload_errors.html", campaign=campaign, errors=shown, more=more, rows=parsed.rows), 400
    _store_result(campaign, f"upload {filename[:80]}", parsed.purchases, parsed.rows, dt.date.fromisoformat(campaign["as_of"]))
    return redirect(url_for("campaigns.show", campaign_id=campaign_id))


@blueprint.get("/<int:campaign_id>/results.png")
def results_chart(campaign_id: int):
    _campaign(campaign_id)
    stored = get_state().query("SELECT summary FROM campaign_results WHERE campaign_id = ? ORDER BY id DESC LIMIT 1", (campaign_id,))
    if not stored:
        abort(404, description="this campaign has no results yet")
    return Response(experiments.chart_png(json.loads(stored[0]["summary"])), mimetype="image/png")


@blueprint.app_template_filter("percent")
def percent(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


@blueprint.app_template_filter("points")
def points(value) -> str:
    """A difference of two rates, in percentage points."""
    return "" if value is None else f"{100 * value:+.1f} pp"


@blueprint.app_template_filter("signed_percent")
def signed_percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}%"


@blueprint.app_template_filter("p_value")
def p_value(value) -> str:
    return "n/a" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")


@blueprint.app_template_filter("money")
def money(value) -> str:
    """An amount with the currency the report was configured with (``[report] currency``), if any."""
    return "" if value is None else f"{get_store().version().meta.get('currency', '')}{value:,.2f}"
