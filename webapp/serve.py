"""Serve the app with waitress, a production WSGI server.

    python -m webapp.serve [--host 127.0.0.1] [--port 8000] [--threads 8]

Configuration comes from the environment (see ``webapp.create_app``). On the first
start (no account yet) it makes an ``admin`` account and prints its password once.
Each request is logged in the combined log format on standard error.
"""

from __future__ import annotations

import argparse
import logging
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    access = logging.StreamHandler()
    access.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("segrec.access").addHandler(access)
    logging.getLogger("segrec.access").propagate = False
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" under load: the access log says more
    try:
        app = create_app()
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    access_log.init_app(app)
    audit.record_configuration(app)
    password = first_admin(app)
    if password:
        print(f"first start: made the account '{FIRST_ADMIN}' (role admin) with the password {password}\n"
              f"  it is shown only now (only its hash is kept); change it with: python -m webapp.users password {FIRST_ADMIN}",
              flush=True)
    from waitress import serve

    print(f"segrec serving {app.config['SEGREC_DB']} on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    serve(app, host=args.host, port=args.port, threads=args.threads, ident="segrec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
