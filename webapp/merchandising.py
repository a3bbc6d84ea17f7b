"""The merchandising page: items blocked from every list and items promoted into a share of the slots.

Everyone signed in reads the rules; editors change them; every change is in the audit trail.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from webapp import audit, rules
from webapp.auth import requires
from webapp.errors import BadRequest
from webapp.state import get_state, get_store

blueprint = Blueprint("merchandising", __name__, url_prefix="/merchandising")


def _changed(action: str, target: str, change, detail: str = ""):
    """Make ``change`` and record it; a refused one is recorded as refused and answered 400 with the reason."""
    try:
        return audit.audited(get_state(), action, target, change, detail=detail)
    except ValueError as error:
        raise BadRequest(str(error)) from None


@blueprint.get("/")
def index():
    listed = rules.listed_rules(get_state())
    ids = [row["item_id"] for row in listed]
    described = {row["item_id"]: row for row in get_store().query(
        f"SELECT item_id, description, item_group, price FROM items WHERE item_id IN ({', '.join('?' for _ in ids)})", tuple(ids))}
    return render_template("merchandising.html", rules=listed, items=described, choices=rules.RULES,
                           share=rules.store_rules(get_state()).promoted_share, max_share=rules.MAX_PROMOTED_SHARE,
                           groups=get_store().query("SELECT item_group, COUNT(*) AS items FROM items GROUP BY item_group ORDER BY item_group"))


@blueprint.post("/")
@requires("editor")
def set_rule():
    item_id, rule, note = request.form.get("item_id", "").strip(), request.form.get("rule", ""), request.form.get("note", "").strip()
    _changed(f"item-{rule}"[:20], item_id[:64], lambda: rules.set_rule(get_state(), item_id, rule, note, by=audit.actor()), detail=note)
    known = get_store().query("SELECT 1 FROM items WHERE item_id = ?", (item_id,))
    flash(f"{item_id} {'blocked' if rule == rules.BLOCK else 'promoted'}"
          + ("" if known else " (not in the current store: the rule applies once it is)"))
    return redirect(url_for("merchandising.index"))


@blueprint.post("/<item_id>/remove")
@requires("editor")
def remove_rule(item_id: str):
    _changed("item-rule-remove", item_id[:64], lambda: rules.remove_rule(get_state(), item_id))
    flash(f"the rule on {item_id} is removed")
    return redirect(url_for("merchandising.index"))


@blueprint.post("/share")
@requires("editor")
def set_share():
    share = _changed("promoted-share", "store", lambda: rules.set_promoted_share(get_state(), request.form.get("promoted_share")),
                     detail=str(request.form.get("promoted_share", ""))[:20])
    flash(f"promoted items now take {share:.0%} of the slots")
    return redirect(url_for("merchandising.index"))
