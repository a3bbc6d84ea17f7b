"""Serve the app with waitress, a production WSGI server.

    python -m webapp.serve [--host 127.0.0.1] [--port 8000] [--threads 8]

Configuration comes from the environment (see ``webapp.create_app``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from webapp import ConfigurationError, create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app()
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from waitress import serve

    print(f"segrec serving {app.config['SEGREC_DB']} on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    serve(app, host=args.host, port=args.port, threads=args.threads, ident="segrec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
