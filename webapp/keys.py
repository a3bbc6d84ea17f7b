"""The storefront's API keys from the command line.

    python -m webapp.keys create --name NAME --scopes recommendations:read,events:write [--rate-per-minute N]
    python -m webapp.keys list
    python -m webapp.keys revoke NAME

``create`` prints the key once; only a hash of it is kept.
"""

from __future__ import annotations

import sys

from webapp import accounts, audit, operators


def main(argv: list[str] | None = None) -> int:
    parser = operators.parser(__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(accounts.SCOPES)}")
    create.add_argument("--rate-per-minute", type=int, default=accounts.DEFAULT_RATE_PER_MINUTE)
    commands.add_parser("list", help="list the keys (never their secrets)")
    revoke = commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("name")
    args = parser.parse_args(argv)
    state = operators.open_state(args.state_db)
    if args.command == "list":
        for key in accounts.keys(state):
            status = f"revoked {key['revoked_at']}" if key["revoked_at"] else "active"
            print(f"{key['name']:<24} sgr_{key['prefix']}_…  {key['scopes']:<50} {key['rate_per_minute']:>7}/min  {status}")
    elif args.command == "create":
        print(audit.audited(state, "key-create", args.name, lambda: accounts.create_key(state, args.name, args.scopes.split(","),
                                                                                      args.rate_per_minute), detail=args.scopes))
    else:
        audit.audited(state, "key-revoke", args.name, lambda: accounts.revoke_key(state, args.name))
        print(f"revoked {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(operators.run(main))
