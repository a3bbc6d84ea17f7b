"""Who may do what: sign-in for the pages (Flask-Login, roles), API keys with scopes for the JSON API, rate limits (Flask-Limiter).

Signed out, every page redirects to the sign-in page; every API route but
``/api/v1/healthz`` needs ``Authorization: Bearer <key>`` (401 without a valid one,
403 without the route's scope, 429 with ``Retry-After`` over the key's rate).
Sign-in failures are limited per account and per address.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
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


class ApiKeys:
    """The API's side of keys, per app: which key a request presents, and whether it is within its rate.

    A valid key is remembered for ``KEY_CACHE_SECONDS``, so the API reads the state file once a
    second per key rather than on every call; revoking on the admin page forgets it at once, from the
    command line (another process) within that second. Each key's calls are counted in fixed
    one-minute windows in memory: the ``limits`` library's memory storage, which the sign-in limits
    use, starts a timer thread every 10 ms under load, a third of an API call's cost.
    """

    KEY_CACHE_SECONDS = 1.0
    MAX_REMEMBERED = 10_000

    def __init__(self):
        self._remembered: dict[str, tuple[float, accounts.ApiKey]] = {}
        self._windows: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def find(self, state, presented: str) -> accounts.ApiKey | None:
        now = time.monotonic()
        remembered = self._remembered.get(presented)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        key = accounts.key_for(state, presented)
        if key is None:
            self._remembered.pop(presented, None)
            return None
        if len(self._remembered) >= self.MAX_REMEMBERED:
            self._remembered.clear()
        self._remembered[presented] = (now + self.KEY_CACHE_SECONDS, key)
        return key

    def forget(self) -> None:
        self._remembered.clear()

    def seconds_to_wait(self, key: accounts.ApiKey) -> int:
        """0 when this call is within the key's rate (and counted), else the seconds until its window ends."""
        now = time.time()
        window = int(now // 60)
        with self._lock:
            start, calls = self._windows.get(key.name, (window, 0))
            if start != window:
                calls = 0
            if calls >= key.rate_per_minute:
                return max(1, math.ceil((window + 1) * 60 - now))
            self._windows[key.name] = (window, calls + 1)
        return 0


def api_keys() -> ApiKeys:
    return current_app.extensions["segrec_api_keys"]


def _guard():
    """Before every request: pages need a signed-in user, the API a key with the route's scope."""
    request.api_key = None
    if request.endpoint in PUBLIC_ENDPOINTS or request.routing_exception is not None:
        return None
    if request.blueprint == "api":
        presented = _bearer_key()
        key = api_keys().find(get_state(), presented) if presented else None
        if key is None:
            abort(401, description="send a valid API key as 'Authorization: Bearer <key>'")
        request.api_key = key
        scope = SCOPE_OF.get(request.endpoint)
        if scope and scope not in key.scopes:
            abort(403, description=f"this key lacks the {scope} scope")
        wait = api_keys().seconds_to_wait(key)
        if wait:
            raise TooManyRequests(f"over this key's {key.rate_per_minute:,} requests a minute", retry_after=wait)
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
    _for_pages_only(app, limiter.init_app)
    app.extensions["segrec_api_keys"] = ApiKeys()


def _for_pages_only(app: Flask, init_app) -> None:
    """Run an extension's ``init_app`` so that the request hooks it adds skip the API: Flask-Limiter's hooks resolve
    the page limits on every request, the API's included, even when its blueprint is exempt."""

    def before(hook):
        return functools.wraps(hook)(lambda: None if request.blueprint == "api" else hook())

    def after(hook):
        return functools.wraps(hook)(lambda response: response if request.blueprint == "api" else hook(response))

    def teardown(hook):
        return functools.wraps(hook)(lambda error=None: None if request.blueprint == "api" else hook(error))

    kinds = ((app.before_request_funcs, before), (app.after_request_funcs, after), (app.teardown_request_funcs, teardown))
    existing = [list(registry.get(None, ())) for registry, _ in kinds]
    init_app(app)
    for (registry, wrap), kept in zip(kinds, existing):
        registry[None] = [hook if hook in kept else wrap(hook) for hook in registry.get(None, ())]
