"""One line per request in the combined log format (what Apache and nginx write), on the ``segrec.access`` logger.

The user field is the signed-in user or ``key:<name>`` for an API key; never a password,
a key or a session.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, request

from webapp import audit

log = logging.getLogger("segrec.access")


def _line(response) -> str:
    now = time.strftime("%d/%b/%Y:%H:%M:%S %z")
    size = response.calculate_content_length()
    target = request.full_path if request.query_string else request.path
    user = audit.actor() if request.endpoint else "-"
    return (f'{request.remote_addr or "-"} - {user if user != "anonymous" else "-"} [{now}] '
            f'"{request.method} {target} {request.environ.get("SERVER_PROTOCOL", "HTTP/1.1")}" {response.status_code} '
            f'{size if size is not None else "-"} "{request.referrer or "-"}" "{request.user_agent.string or "-"}"')


def init_app(app: Flask) -> None:
    @app.after_request
    def log_request(response):
        log.info(_line(response))
        return response
