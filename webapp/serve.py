"""Serve the app with gunicorn, a production WSGI server: several worker processes, so the two cores both serve.

    python -m webapp.serve [--host 127.0.0.1] [--port 8000] [--workers N]

Configuration comes from the environment (see ``webapp.create_app``). On the first
start (no account yet) it makes an ``admin`` account and prints its password once.
Each request is logged in the combined log format on standard error. The workers are
synchronous (one request at a time each, the default of cores + 1 of them): put a
buffering proxy in front (it terminates TLS too), as gunicorn advises.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from gunicorn.app.base import BaseApplication

from webapp import ConfigurationError, access_log, accounts, audit, create_app
from webapp.state import get_state

FIRST_ADMIN = "admin"


def first_admin(app) -> str | None:
    """The first admin's password, when there is no account yet (only its hash is stored); None otherwise."""
    with app.app_context():
        state = get_state()
        if accounts.user_count(state):
            return None
        password = accounts.new_password()
        accounts.add_user(state, FIRST_ADMIN, "admin", password)
        audit.record(state, "user-add", FIRST_ADMIN, detail="admin, made on first start", who="first-start")
        return password


def _logged_app():
    """The app as each worker serves it: made in the worker, after the fork, so no SQLite connection crosses it. The worker
    takes over the erasure jobs of workers that died."""
    app = create_app()
    access_log.init_app(app)
    app.extensions["segrec_erasure"].resume()
    return app


class Server(BaseApplication):
    """gunicorn run from Python (its documented custom-application pattern), with segrec's settings only."""

    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return _logged_app()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1, help="server processes (default: cores + 1)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    access = logging.StreamHandler()
    access.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("segrec.access").addHandler(access)
    logging.getLogger("segrec.access").setLevel(logging.INFO)
    logging.getLogger("segrec.access").propagate = False
    try:
        app = create_app()  # checked once before any worker starts: a bad setting is one line, not a worker crash loop
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    audit.record_configuration(app)
    password = first_admin(app)
    if password:
        print(f"first start: made the account '{FIRST_ADMIN}' (role admin) with the password {password}\n"
              f"  it is shown only now (only its hash is kept); change it with: python -m webapp.users password {FIRST_ADMIN}",
              flush=True)
    del app
    print(f"segrec serving {os.environ.get('SEGREC_DB', 'output/segrec.sqlite')} on http://{args.host}:{args.port}/ "
          f"with {args.workers} worker(s) (Ctrl-C to stop)", flush=True)
    Server({"bind": f"{args.host}:{args.port}", "workers": args.workers, "worker_class": "sync", "proc_name": "segrec",
            "accesslog": None, "loglevel": "warning"}).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
