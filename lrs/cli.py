"""The `lrs` command: serve, worker, beat, credentials."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lrs.config import get_settings
from lrs.credential_admin import (
    CredentialRequestError,
    create_credential,
    list_credentials,
    parse_scopes,
    revoke_credential,
)
from lrs.services import build_services


def _scopes(text: str) -> list[str]:
    try:
        return parse_scopes(text)
    except CredentialRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrs", description="xAPI LRS with live progress")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="API processes to run (default LRS_WORKERS, 1): one per core to use",
    )
    serve.add_argument(
        "--derivation",
        choices=["auto", "inprocess", "process", "celery"],
        default=None,
        help="who derives progress (default LRS_DERIVATION, auto): 'process' runs a "
        "derivation process beside the API processes, on a core of its own",
    )
    commands.add_parser(
        "derive",
        help="run a derivation process in the foreground: derive what the outbox owes, as "
        "`lrs serve` does with LRS_DERIVATION=process (then serve with --derivation process)",
    ).add_argument("--log-level", default="info")

    # Thin wrappers around `celery -A workers ...`: every further argument goes to Celery
    # (`lrs worker --help` shows Celery's options), hence no argparse options of their own.
    commands.add_parser(
        "worker",
        add_help=False,
        help="run a Celery worker that derives progress (celery -A workers worker ...)",
    )
    commands.add_parser(
        "beat",
        add_help=False,
        help="run the Celery beat scheduler of the outbox sweep (celery -A workers beat ...)",
    )

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

    courses = commands.add_parser("courses", help="the course catalogue")
    course_actions = courses.add_subparsers(dest="action", required=True)
    course_import = course_actions.add_parser("import", help="import a cmi5 course structure")
    course_import.add_argument("file", type=Path, help="cmi5.xml")
    course_import.add_argument("--store", default="default")
    course_import.add_argument("--profile", default="cmi5")

    progress = commands.add_parser("progress", help="derived progress")
    progress_actions = progress.add_subparsers(dest="action", required=True)
    rebuild = progress_actions.add_parser("rebuild", help="re-derive progress from statements")
    rebuild.add_argument("--store", default="default")
    rebuild.add_argument("--course", default=None, help="only this course (its IRI)")

    importing = commands.add_parser("import", help="import data")
    import_kinds = importing.add_subparsers(dest="kind", required=True)
    import_statements = import_kinds.add_parser("statements", help="statements from JSON Lines")
    import_statements.add_argument("file", type=Path, help="one statement per line")
    import_statements.add_argument("--store", default="default")
    import_statements.add_argument("--batch", type=int, default=500)

    exporting = commands.add_parser("export", help="export data")
    export_kinds = exporting.add_subparsers(dest="kind", required=True)
    export_statements = export_kinds.add_parser("statements", help="statements as JSON Lines")
    export_statements.add_argument("--store", default="default")
    export_statements.add_argument("--output", type=Path, default=None, help="default: stdout")

    erase = commands.add_parser(
        "erase-learner", help="erase a learner's statements, documents and progress"
    )
    erase.add_argument("--store", default="default")
    erase.add_argument("--learner", required=True, help="agent JSON or learner key")
    erase.add_argument("--yes", action="store_true", help="really erase (default: dry run)")
    return parser


def _data_command(args: argparse.Namespace) -> int:
    from lrs import cli_data

    if args.command == "courses":
        return asyncio.run(cli_data.import_course(args.file, args.store, args.profile))
    if args.command == "progress":
        return asyncio.run(cli_data.rebuild_progress(args.store, args.course))
    if args.command == "import":
        return asyncio.run(cli_data.import_statements(args.file, args.store, args.batch))
    if args.command == "export":
        if args.output is None:
            return asyncio.run(cli_data.export_statements(args.store, sys.stdout))
        with args.output.open("w", encoding="utf-8") as output:
            return asyncio.run(cli_data.export_statements(args.store, output))
    return asyncio.run(cli_data.erase(args.store, args.learner, args.yes))


async def _credentials(args: argparse.Namespace) -> int:
    services = build_services(get_settings())
    try:
        await services.credentials.ensure_indexes()
        if args.action == "create":
            try:
                credential, secret = await create_credential(
                    services.credentials, args.store, args.scopes, args.name
                )
            except CredentialRequestError as exc:
                print(f"lrs credentials create: {exc}", file=sys.stderr)
                return 2
            print(f"key:    {credential.key}")
            print(f"secret: {secret}")
            print(f"store:  {credential.store}")
            print(f"scopes: {','.join(sorted(credential.scopes))}")
            print("The secret is shown only now; store it safely.", file=sys.stderr)
        elif args.action == "list":
            for credential in await list_credentials(services.credentials, args.store):
                state = "revoked" if credential.revoked else "active"
                scopes = ",".join(sorted(credential.scopes))
                print(f"{credential.key}\t{credential.store}\t{state}\t{scopes}\t{credential.name}")
        elif args.action == "revoke":
            if not await revoke_credential(services.credentials, args.key):
                print(f"no credential with key {args.key}", file=sys.stderr)
                return 1
            print(f"revoked {args.key}")
    finally:
        await services.close()
    return 0


def _has_option(args: Sequence[str], *names: str) -> bool:
    return any(a in names or a.startswith(tuple(f"{n}=" for n in names)) for a in args)


def celery_command(command: str, extra: Sequence[str]) -> list[str]:
    """The Celery command line `lrs worker` / `lrs beat` runs: this interpreter, so the venv's
    Celery and `workers` package, with defaults the caller's own arguments override."""
    args = [sys.executable, "-m", "celery", "-A", "workers", command]
    if not _has_option(extra, "-l", "--loglevel"):
        args += ["--loglevel", "INFO"]
    return args + list(extra)


def _celery(command: str, extra: Sequence[str]) -> int:
    if "-h" not in extra and "--help" not in extra and not get_settings().redis_url:
        print(
            f"lrs {command}: LRS_REDIS_URL is not set. The workers take their tasks from the "
            "Redis broker the API enqueues to; set LRS_REDIS_URL to the same URL as the API's.",
            file=sys.stderr,
        )
        return 2
    args = celery_command(command, extra)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: signals (SIGTERM from a container runtime) reach Celery directly.
    os.execv(args[0], args)
    return 0  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("worker", "beat"):
        return _celery(args.command, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "serve":
        from lrs.observability import configure_logging
        from lrs.server import serve, serving_settings

        settings = get_settings()
        if args.workers is not None:
            if args.workers < 1:
                parser.error("--workers must be at least 1")
            settings = settings.model_copy(update={"workers": args.workers})
        if args.derivation is not None:
            settings = settings.model_copy(update={"derivation": args.derivation})
        configure_logging(args.log_level)
        try:
            settings = serving_settings(settings)
        except ValueError as exc:
            parser.error(str(exc))
        serve(
            settings,
            host=args.host or settings.host,
            port=args.port or settings.port,
            log_level=args.log_level,
        )
        return 0
    if args.command == "derive":
        from lrs import derivation_process
        from lrs.observability import configure_logging

        configure_logging(args.log_level)
        derivation_process.run(get_settings())
        return 0
    if args.command == "credentials":
        return asyncio.run(_credentials(args))
    if args.command in ("courses", "progress", "import", "export", "erase-learner"):
        return _data_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
