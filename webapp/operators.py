"""What the operators' command lines (``webapp.users``, ``webapp.keys``, ``webapp.events``) share: the state file and one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from webapp import DEFAULTS, accounts
from webapp.state import State


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--state-db", default=os.environ.get("SEGREC_STATE_DB", DEFAULTS["SEGREC_STATE_DB"]),
                        help="the app's own SQLite file (default: $SEGREC_STATE_DB, else %(default)s)")
    return parser


def open_state(path: str) -> State:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return State(path)


class OperatorError(ValueError):
    """Something an operator's command cannot do, told in one line."""


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    try:
        return main(argv)
    except (accounts.AccountError, OperatorError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
