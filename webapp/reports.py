"""Marketer pages: the segment dashboard with the report charts, and customer lookup."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, render_template, request

from webapp import serving
from webapp.errors import BadRequest
from webapp.state import get_store

blueprint = Blueprint("reports", __name__)
CHART_NAME = re.compile(r"^[a-z0-9_]{1,64}$")
CHART_TITLES = {
    "segment_sizes": "Customers and revenue per segment",
    "distributions": "Recency, frequency, spend and CLV by segment",
    "frequency_vs_spend": "Frequency against spend",
    "top_items": "Top items per segment",
    "clv_backtest": "CLV backtest: predicted against actual",
}
RUN_CHARTS = ("migration",)  # shown on the runs page, not the dashboard


@blueprint.get("/")
def dashboard():
    store = get_store()
    order = list(CHART_TITLES)  # the report's order; charts it does not know come after, by name
    names = sorted((row["name"] for row in store.query("SELECT name FROM charts") if row["name"] not in RUN_CHARTS),
                   key=lambda name: (order.index(name) if name in order else len(order), name))
    charts = [(name, CHART_TITLES.get(name, name.replace("_", " ").capitalize())) for name in names]
    return render_template("dashboard.html", segments=serving.segments(), lifecycle=serving.lifecycle(), charts=charts,
                           meta=store.version().meta)


@blueprint.get("/runs")
def runs():
    """The pipeline runs kept, and how customers moved between the segments of the current one and the one before."""
    store = get_store()
    kept = [dict(row) for row in store.query("SELECT * FROM runs ORDER BY started_at DESC")]
    moved = [dict(row) for row in store.query("SELECT * FROM migration")]
    segments = [row["segment"] for row in serving.segments()]
    order = {name: position for position, name in enumerate([*segments, "(new)", "(gone)"])}
    cells = {(row["from_segment"], row["to_segment"]): row for row in moved}
    sources = sorted({row["from_segment"] for row in moved}, key=lambda name: order.get(name, len(order)))
    targets = sorted({row["to_segment"] for row in moved}, key=lambda name: order.get(name, len(order)))
    has_chart = bool(store.query("SELECT 1 FROM charts WHERE name = 'migration'"))
    return render_template("runs.html", runs=kept, cells=cells, sources=sources, targets=targets, meta=store.version().meta,
                           has_chart=has_chart)


@blueprint.get("/charts/<name>.png")
def chart(name: str):
    # Charts come from the store by name, never from the file system, and names are checked.
    if not CHART_NAME.match(name):
        abort(404)
    rows = get_store().query("SELECT png FROM charts WHERE name = ?", (name,))
    if not rows:
        abort(404)
    return Response(rows[0]["png"], mimetype="image/png", headers={"Cache-Control": "max-age=300"})


@blueprint.get("/customers")
def customer_lookup():
    customer_id = request.args.get("id", "").strip()
    context = {"customer_id": customer_id, "customer": None, "lists": {}, "events": [], "error": None}
    if customer_id:
        try:
            serving.check_id(customer_id, "customer id")
            context["customer"] = serving.customer(customer_id)
            context["lists"] = {name: serving.recommendations(customer_id, name, 10, None) for name in serving.LISTS}
            context["events"] = serving.recent_events(customer_id)
        except BadRequest as error:
            context["error"] = str(error)
        except serving.NotFound as error:
            context["error"] = f"{error}; unknown customers are served trending items"
    return render_template("customer.html", **context)
