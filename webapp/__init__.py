"""The Flask app for marketers and website engineers.

    make serve                                  # gunicorn on 127.0.0.1:8000, store output/segrec.sqlite
    SEGREC_DB=/srv/segrec.sqlite SECRET_KEY=... python -m webapp.serve --host 0.0.0.0

Configuration comes from the environment (``SEGREC_*``, ``SECRET_KEY``) or, in
tests, ``create_app(test_config)``. The app reads the store ``jobs.publish``
writes (swapping in a newer one without a restart) and keeps what it owns
(events, campaigns, results) in a second SQLite file that publishing never
touches. It never imports pyspark.
"""

from __future__ import annotations

import datetime as dt
import os

from flask import Flask

from webapp.live import LiveSettings

MIN_SECRET_BYTES = 32
DEFAULTS = {
    "SEGREC_DB": "output/segrec.sqlite",
    "SEGREC_STATE_DB": "output/segrec-state.sqlite",
    "SEGREC_OUTPUT": None,  # the pipeline output the store was published from (erasure); default: the store's directory
    "SEGREC_ENV": "production",  # "development" allows a missing SECRET_KEY
    "SEGREC_STORE_CHECK_SECONDS": 1.0,
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,  # uploads and API bodies; larger ones get 413
    "MAX_N": 100,
    "SEGREC_SIGN_IN_RATE": "5/minute;30/hour",  # failed sign-ins per account
    "SEGREC_SIGN_IN_RATE_PER_ADDRESS": "20/minute;200/hour",  # failed sign-ins per client address
    "SEGREC_SESSION_HOURS": 8.0,  # a session ends after this long without a request
    "SEGREC_EVENT_HALF_LIFE_HOURS": LiveSettings.half_life_hours,  # a shopper's event pulls on their lists half as hard this much later
    "SEGREC_EVENT_SHARE": LiveSettings.event_share,  # of a known shopper's fused list score that their events give (the batch list gives the rest)
    "SEGREC_EXPLORATION_SHARE": LiveSettings.exploration_share,  # of the slots of discover and "also bought" that go to new items (0 to 0.5)
}


class ConfigurationError(RuntimeError):
    pass


def _from_environment() -> dict:
    found = {key: os.environ[key] for key in (*DEFAULTS, "SECRET_KEY") if key in os.environ}
    for key in ("SEGREC_STORE_CHECK_SECONDS", "SEGREC_SESSION_HOURS", "SEGREC_EVENT_HALF_LIFE_HOURS", "SEGREC_EVENT_SHARE",
                "SEGREC_EXPLORATION_SHARE"):
        if key in found:
            found[key] = float(found[key])
    for key in ("MAX_CONTENT_LENGTH", "MAX_N"):
        if key in found:
            found[key] = int(found[key])
    # Served over HTTPS (TLS at a proxy): the session cookie is then never sent over plain HTTP.
    found["SESSION_COOKIE_SECURE"] = os.environ.get("SESSION_COOKIE_SECURE", "").lower() in ("1", "true", "yes")
    return found


def check_secret_key(secret: str) -> None:
    """At least 32 bytes that look random: a short or repetitive key lets anyone forge a session."""
    if len(secret.encode()) < MIN_SECRET_BYTES or len(set(secret)) < 12:
        raise ConfigurationError(f"SECRET_KEY must be at least {MIN_SECRET_BYTES} random bytes; make one with: "
                                 "python -c 'import secrets; print(secrets.token_hex(32))'")


def create_app(test_config: dict | None = None) -> Flask:
    from webapp import admin, api, audiences, auth, campaigns, errors, merchandising, names, reports, security, state
    from webapp.erasure import ErasureRunner
    from webapp.store import Store

    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.update(test_config if test_config is not None else _from_environment())
    if not app.config.get("SECRET_KEY"):
        if app.config["SEGREC_ENV"] != "development":
            raise ConfigurationError("SECRET_KEY is not set: set it in the environment (or SEGREC_ENV=development for a local trial)")
        app.config["SECRET_KEY"] = os.urandom(32).hex()
    check_secret_key(app.config["SECRET_KEY"])
    try:
        app.extensions["segrec_live"] = LiveSettings(half_life_hours=app.config["SEGREC_EVENT_HALF_LIFE_HOURS"],
                                                     event_share=app.config["SEGREC_EVENT_SHARE"],
                                                     exploration_share=app.config["SEGREC_EXPLORATION_SHARE"])
    except ValueError as error:
        raise ConfigurationError(f"SEGREC_EVENT_* or SEGREC_EXPLORATION_SHARE: {error}") from None
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", DEBUG=False,
                      PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=app.config["SEGREC_SESSION_HOURS"]))

    # Resources opened once per app: the published store (watched for new versions) and the app's own schema.
    app.extensions["segrec_store"] = Store(app.config["SEGREC_DB"], check_seconds=app.config["SEGREC_STORE_CHECK_SECONDS"])
    state.init_app(app)
    output = app.config["SEGREC_OUTPUT"] or os.path.dirname(os.path.abspath(app.config["SEGREC_DB"]))
    app.extensions["segrec_erasure"] = ErasureRunner(output, app.config["SEGREC_DB"], app.extensions["segrec_state"])
    security.init_app(app, api.blueprint)
    errors.init_app(app)
    names.init_app(app)
    auth.init_app(app)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(reports.blueprint)
    app.register_blueprint(audiences.blueprint)
    app.register_blueprint(campaigns.blueprint)
    app.register_blueprint(merchandising.blueprint)
    app.register_blueprint(admin.blueprint)
    return app
