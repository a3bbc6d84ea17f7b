"""Who may do what: sign-in for the pages (Flask-Login, roles), API keys with scopes for the JSON API, rate limits (Flask-Limiter).

Signed out, every page redirects to the sign-in page; every API route but
``/api/v1/healthz`` needs ``Authorization: Bearer <key>`` (401 without a valid one,
403 without the route's scope, 429 with ``Retry-After`` over the key's rate).
Sign-in failures are limited per account and per address.
"""

from __future__ import annotations

import functools
import math
import time
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

from webapp import accounts, audit
from webapp.state import get_state

blueprint = Blueprint("auth", __name__)
login_manager = LoginManager()
limiter = Limiter(key_func=get_remote_address, storage_uri="memory://", headers_enabled=True)
PUBLIC_ENDPOINTS = {"auth.sign_in", "static", "api.healthz"}
# What each API route needs (by endpoint); routes not listed need a valid key of any scope.
SCOPE_OF = {
    "api.recommendations": "recommendations:read", "api.similar": "recommendations:read", "api.segments": "recommendations:read",
    "api.customer": "customers:read", "api.events": "events:write",
}


class SignedIn(UserMixin):
    """A signed-in user as Flask-Login sees them; the id carries the session version, so a new password ends old sessions."""

    def __init__(self, user: accounts.User):
        self.user = user
        self.name, self.role = user.name, user.role

    def get_id(self) -> str:
        return f"{self.user.id}:{self.user.session_version}"

    def can(self, role: str) -> bool:
        return self.user.can(role)


@login_manager.user_loader
def _load(session_id: str):
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit() or not version.isdigit():
        return None
    user = accounts.find_user(get_state(), int(user_id))
    return SignedIn(user) if user is not None and user.session_version == int(version) else None


def requires(role: str):
    """A view only ``role`` (or a higher one) may use; others get 403."""

    def decorate(view):
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            if not current_user.can(role):
                abort(403, description=f"this needs the {role} role; you are signed in as {current_user.role}")
            return view(*args, **kwargs)

        return guarded

    return decorate


def _bearer_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _within_rate(key: accounts.ApiKey) -> None:
    """Each key at its own rate, counted per key in a fixed one-minute window (the ``limits`` library Flask-Limiter is built on:
    asked directly, it costs the API a fraction of what a decorator's limit resolution does on every call)."""
    rate = RateLimitItemPerMinute(key.rate_per_minute)
    counter = current_app.extensions["segrec_api_rate"]
    if not counter.hit(rate, key.name):
        reset = counter.get_window_stats(rate, key.name).reset_time
        raise TooManyRequests(f"over this key's {key.rate_per_minute:,} requests a minute", retry_after=max(1, math.ceil(reset - time.time())))


def _guard():
    """Before every request: pages need a signed-in user, the API a key with the route's scope."""
    request.api_key = None
    if request.endpoint in PUBLIC_ENDPOINTS or request.routing_exception is not None:
        return None
    if request.blueprint == "api":
        presented = _bearer_key()
        key = accounts.key_for(get_state(), presented) if presented else None
        if key is None:
            abort(401, description="send a valid API key as 'Authorization: Bearer <key>'")
        request.api_key = key
        scope = SCOPE_OF.get(request.endpoint)
        if scope and scope not in key.scopes:
            abort(403, description=f"this key lacks the {scope} scope")
        _within_rate(key)
        return None
    if not current_user.is_authenticated:
        return redirect(url_for("auth.sign_in", next=request.full_path if request.query_string else request.path))
    return None


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return url_for("reports.dashboard")
    return target


def _sign_in_name() -> str:
    return f"account:{request.form.get('name', '')[:64]}"


@blueprint.route("/sign-in", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["SEGREC_SIGN_IN_RATE"], methods=["POST"], key_func=_sign_in_name,
               deduct_when=lambda response: response.status_code != 302)
@limiter.limit(lambda: current_app.config["SEGREC_SIGN_IN_RATE_PER_ADDRESS"], methods=["POST"],
               deduct_when=lambda response: response.status_code != 302)
def sign_in():
    if request.method == "GET":
        return render_template("sign_in.html", next=request.args.get("next", ""))
    name, password = request.form.get("name", ""), request.form.get("password", "")
    user = accounts.authenticate(get_state(), name, password) if accounts.NAME.fullmatch(name) else None
    if user is None:
        audit.record(get_state(), "sign-in", name[:64], "failed", who="anonymous")
        return render_template("sign_in.html", next=request.form.get("next", ""), error="wrong name or password"), 401
    login_user(SignedIn(user))
    audit.record(get_state(), "sign-in", user.name, who=user.name)
    return redirect(_safe_next(request.form.get("next")))


@blueprint.post("/sign-out")
def sign_out():
    audit.record(get_state(), "sign-out", current_user.name)
    logout_user()
    flash("you are signed out")
    return redirect(url_for("auth.sign_in"))


def _sessions_expire():
    if request.blueprint != "api":
        session.permanent = True  # so PERMANENT_SESSION_LIFETIME (idle time) bounds every session


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.session_protection = "strong"
    app.register_blueprint(blueprint)
    # The guard first: the limiter's own check (registered by init_app) counts API calls per key, which the guard finds.
    app.before_request(_guard)
    app.before_request(_sessions_expire)
    limiter.init_app(app)
    app.extensions["segrec_api_rate"] = FixedWindowRateLimiter(MemoryStorage())


def exempt_from_page_limits(api_blueprint: Blueprint) -> Blueprint:
    """The API's calls are counted per key (``_within_rate``); the sign-in limits need not look at them."""
    return limiter.exempt(api_blueprint)
