"""CSRF protection on every form (Flask-WTF), and security headers on every response."""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFProtect

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cross-Origin-Opener-Policy": "same-origin",
}
csrf = CSRFProtect()


def _add_headers(response):
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask, api_blueprint) -> None:
    # The JSON API is for machines: a key in a header, no cookies, no forms.
    csrf.exempt(api_blueprint)
    csrf.init_app(app)
    app.after_request(_add_headers)
