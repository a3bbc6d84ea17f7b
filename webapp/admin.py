"""Admin pages: users, API keys, erasure and the audit trail (the admin role only)."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for

from webapp import accounts, audit, erasure, serving
from webapp.auth import api_keys, requires
from webapp.errors import BadRequest
from webapp.state import get_state

blueprint = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_PAGE_ROWS = 500


@blueprint.before_request
@requires("admin")
def admins_only():
    return None


def _changed(action: str, target: str, change):
    """Make ``change`` and record it; a refused one is recorded as refused and answered 400 with the reason."""
    try:
        return audit.audited(get_state(), action, target, change, refused=(accounts.AccountError,))
    except accounts.AccountError as error:
        raise BadRequest(str(error)) from None


@blueprint.get("/users")
def users():
    return render_template("admin_users.html", users=accounts.users(get_state()), roles=accounts.ROLES)


@blueprint.post("/users")
def add_user():
    name, role = request.form.get("name", ""), request.form.get("role", "")
    password = accounts.new_password()
    _changed("user-add", name[:64], lambda: accounts.add_user(get_state(), name, role, password))
    return render_template("admin_secret.html", what=f"the password of {name} ({role})", secret=password,
                           back=url_for("admin.users"))


@blueprint.post("/users/<name>/remove")
def remove_user(name: str):
    _changed("user-remove", name[:64], lambda: accounts.remove_user(get_state(), name))
    flash(f"user {name} removed")
    return redirect(url_for("admin.users"))


@blueprint.get("/keys")
def keys():
    return render_template("admin_keys.html", keys=accounts.keys(get_state()), scopes=accounts.SCOPES,
                           default_rate=accounts.DEFAULT_RATE_PER_MINUTE)


@blueprint.post("/keys")
def create_key():
    name = request.form.get("name", "")
    try:
        rate = int(request.form.get("rate_per_minute") or accounts.DEFAULT_RATE_PER_MINUTE)
    except ValueError:
        raise BadRequest("the rate is a whole number of requests per minute") from None
    key = _changed("key-create", name[:64], lambda: accounts.create_key(get_state(), name, request.form.getlist("scopes"), rate))
    return render_template("admin_secret.html", what=f"the API key {name}", secret=key, back=url_for("admin.keys"))


@blueprint.post("/keys/<name>/revoke")
def revoke_key(name: str):
    _changed("key-revoke", name[:64], lambda: accounts.revoke_key(get_state(), name))
    api_keys().forget()
    flash(f"key {name} revoked")
    return redirect(url_for("admin.keys"))


@blueprint.get("/erasure")
def erasure_page():
    runner = current_app.extensions["segrec_erasure"]
    return render_template("admin_erasure.html", jobs=runner.jobs(), reports=erasure.reports(runner.output),
                           output=runner.output, most=erasure.MAX_CUSTOMERS_PER_REQUEST)


@blueprint.post("/erasure")
def erase():
    customer_ids = list(dict.fromkeys(line.strip() for line in request.form.get("customers", "").splitlines() if line.strip()))
    if not customer_ids:
        raise BadRequest("give the ids of the customers to erase, one per line")
    if len(customer_ids) > erasure.MAX_CUSTOMERS_PER_REQUEST:
        raise BadRequest(f"at most {erasure.MAX_CUSTOMERS_PER_REQUEST:,} customers at a time, got {len(customer_ids):,}")
    for number, customer_id in enumerate(customer_ids, 1):
        if not serving.ID_PATTERN.fullmatch(customer_id):
            raise BadRequest(f"line {number} is not a customer id (1-64 letters, digits, '.', '_' or '-')")
    number = current_app.extensions["segrec_erasure"].request(customer_ids, audit.actor())
    audit.record(get_state(), "erase-request", f"{len(customer_ids)} customer(s)",
                 detail=f"erasure {number}: removed from the app's files at once; jobs.erase runs on the output")
    flash(f"erasure {number}: {len(customer_ids)} customer(s) removed from the app at once; the pipeline output follows "
          "(this page shows when it is done)")
    return redirect(url_for("admin.erasure_page"))


def _audit_filters() -> dict:
    filters = {column: request.args.get(column, "").strip()[:64] for column in audit.FILTERS}
    for bound in ("since", "until"):
        value = request.args.get(bound, "").strip()
        if value:
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                raise BadRequest(f"{bound} is a date as YYYY-MM-DD") from None
        filters[bound] = value
    return filters


@blueprint.get("/audit")
def audit_trail():
    filters = _audit_filters()
    rows = audit.entries(get_state(), limit=AUDIT_PAGE_ROWS, **filters)
    return render_template("admin_audit.html", rows=rows, filters=filters, limit=AUDIT_PAGE_ROWS)


@blueprint.get("/audit.csv")
def audit_csv():
    rows = audit.entries(get_state(), **_audit_filters())
    audit.record(get_state(), "audit-export", "", detail=f"{len(rows)} rows")
    return Response(audit.as_csv(rows), mimetype="text/csv", headers={"Content-Disposition": 'attachment; filename="audit.csv"'})
