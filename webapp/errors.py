"""Errors: JSON with a message under /api, a plain page elsewhere; never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from webapp.store import StoreUnavailable

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """A parameter that fails validation; the message is shown to the caller."""


class Conflict(ValueError):
    """A request the thing's current state refuses (changing a campaign already sent, say); the message says why."""


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _respond(status: int, message: str, headers: dict | None = None):
    headers = dict(headers or {})
    if _wants_json():
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="segrec"'
        return jsonify({"error": {"status": status, "message": message}}), status, headers
    return render_template("error.html", status=status, message=message), status, headers


def init_app(app: Flask) -> None:
    @app.errorhandler(BadRequest)
    def bad_request(error):
        return _respond(400, str(error))

    @app.errorhandler(Conflict)
    def conflict(error):
        return _respond(409, str(error))

    @app.errorhandler(StoreUnavailable)
    def unavailable(error):
        log.error("store unavailable: %s", error)
        return _respond(503, "the recommendation store is not available yet; publish one with jobs.publish")

    @app.errorhandler(CSRFError)
    def stale_form(error):
        return _respond(400, "the form has expired or did not come from this site; reload the page and try again")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        kept = {name: value for name, value in error.get_headers() if name == "Retry-After"}
        return _respond(error.code or 500, error.description or error.name, kept)

    @app.errorhandler(Exception)
    def unexpected(error):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _respond(500, InternalServerError.description)
