"""Marketers' accounts from the command line, so a fresh install needs no browser.

    python -m webapp.users add NAME --role admin|editor|viewer [--password-file FILE]
    python -m webapp.users password NAME [--password-file FILE]     # a new password; their sessions end
    python -m webapp.users list
    python -m webapp.users remove NAME

Without ``--password-file`` the password is asked for twice (never echoed, never an argument).
"""

from __future__ import annotations

import getpass
import sys

from webapp import accounts, audit, operators


def read_password(path: str | None) -> str:
    if path:
        with open(path, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise accounts.AccountError("the two passwords differ")
    return first


def main(argv: list[str] | None = None) -> int:
    parser = operators.parser(__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=accounts.ROLES)
    add.add_argument("--password-file", help="read the password from the first line of this file")
    password = commands.add_parser("password", help="set a user's password")
    password.add_argument("name")
    password.add_argument("--password-file", help="read the password from the first line of this file")
    commands.add_parser("list", help="list the users")
    remove = commands.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    args = parser.parse_args(argv)
    state = operators.open_state(args.state_db)
    if args.command == "list":
        for user in accounts.users(state):
            print(f"{user['name']:<24} {user['role']:<8} created {user['created_at']}")
    elif args.command == "add":
        password = read_password(args.password_file)
        audit.audited(state, "user-add", args.name, lambda: accounts.add_user(state, args.name, args.role, password), detail=args.role)
        print(f"added {args.name} ({args.role})")
    elif args.command == "password":
        password = read_password(args.password_file)
        audit.audited(state, "user-password", args.name, lambda: accounts.set_password(state, args.name, password))
        print(f"password of {args.name} changed; their sessions have ended")
    else:
        audit.audited(state, "user-remove", args.name, lambda: accounts.remove_user(state, args.name))
        print(f"removed {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(operators.run(main))
