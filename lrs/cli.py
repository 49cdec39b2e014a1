"""The `lrs` command: serve, credentials."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from lrs.auth import KNOWN_SCOPES
from lrs.config import get_settings
from lrs.services import build_services


def _scopes(text: str) -> list[str]:
    scopes = [s.strip() for s in text.replace(" ", ",").split(",") if s.strip()]
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_SCOPES))}"
        )
    if not scopes:
        raise argparse.ArgumentTypeError("at least one scope is required")
    return scopes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrs", description="xAPI LRS with live progress")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--log-level", default="info")

    credentials = commands.add_parser("credentials", help="manage API credentials")
    actions = credentials.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a credential; prints key and secret once")
    create.add_argument("--store", required=True, help="the store (tenant) it belongs to")
    create.add_argument(
        "--scopes",
        required=True,
        type=_scopes,
        help="comma-separated, e.g. statements/write,all/read",
    )
    create.add_argument("--name", default="", help="a label, used as the authority's name")
    listing = actions.add_parser("list", help="list credentials (never their secrets)")
    listing.add_argument("--store", default=None)
    revoke = actions.add_parser("revoke", help="revoke a credential by key")
    revoke.add_argument("key")
    return parser


async def _credentials(args: argparse.Namespace) -> int:
    services = build_services(get_settings())
    try:
        await services.credentials.ensure_indexes()
        if args.action == "create":
            credential, secret = await services.credentials.create(
                args.store, args.scopes, args.name
            )
            print(f"key:    {credential.key}")
            print(f"secret: {secret}")
            print(f"store:  {credential.store}")
            print(f"scopes: {','.join(sorted(credential.scopes))}")
            print("The secret is shown only now; store it safely.", file=sys.stderr)
        elif args.action == "list":
            for credential in await services.credentials.list(args.store):
                state = "revoked" if credential.revoked else "active"
                scopes = ",".join(sorted(credential.scopes))
                print(f"{credential.key}\t{credential.store}\t{state}\t{scopes}\t{credential.name}")
        elif args.action == "revoke":
            if not await services.credentials.revoke(args.key):
                print(f"no credential with key {args.key}", file=sys.stderr)
                return 1
            print(f"revoked {args.key}")
    finally:
        await services.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        import uvicorn

        settings = get_settings()
        uvicorn.run(
            "lrs.app:create_app",
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            log_level=args.log_level,
        )
        return 0
    if args.command == "credentials":
        return asyncio.run(_credentials(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
