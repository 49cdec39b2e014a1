"""The reference server of `python -m bench reference`: the least an LRS's statement write can
cost on this machine, as issue 10 defines it ("a bare FastAPI app that only runs our
`validate_statement` and inserts each statement plus five index rows into SQLite, one
transaction per request, WAL").

    python -m bench.bare_app --port 8123 --path /tmp/bare.sqlite3

POST /xapi/statements takes one statement or an array, validates each one (xAPI 1.0.3), gives
those without an id one, and stores them in one SQLite transaction: the statement's JSON text
under its id (the table's unique id index is the first index row), and four term rows
(actor, verb, object, registration or "-"). Commits are synced as the LRS's are by default
(`synchronous=FULL`). Answers the ids, as the LRS does. No auth, no outbox, no derivation, no
conflict checks: it is a yardstick, not an LRS. GET /ready answers once it can take requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import threading
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response

from bench.server import LOOPBACK
from lrs.xapi.validation import StatementValidationError, validate_statement


class BareStore:
    """One connection, used by one request's transaction at a time."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS statements"
            " (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS terms (term TEXT NOT NULL, seq INTEGER NOT NULL,"
            " PRIMARY KEY (term, seq)) WITHOUT ROWID"
        )
        self._lock = threading.Lock()

    def insert(self, statements: list[dict[str, Any]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    seq = self._db.execute(
                        "INSERT INTO statements (id, body) VALUES (?, ?)",
                        (statement["id"], json.dumps(statement, separators=(",", ":"))),
                    ).lastrowid
                    self._db.executemany(
                        "INSERT INTO terms VALUES (?, ?)", [(t, seq) for t in _terms(statement)]
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise


def _terms(statement: dict[str, Any]) -> set[str]:
    context = statement.get("context") or {}
    return {
        "actor:" + json.dumps(statement["actor"], sort_keys=True),
        "verb:" + statement["verb"]["id"],
        "object:" + str(statement["object"].get("id")),
        "registration:" + str(context.get("registration", "-")),
    }


def make_app(path: str) -> FastAPI:
    app = FastAPI()
    store = BareStore(path)

    @app.get("/ready")
    async def ready() -> Response:
        return Response(b"ok")

    @app.post("/xapi/statements")
    async def post(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            statements = body if isinstance(body, list) else [body]
            for statement in statements:
                validate_statement(statement)
        except (ValueError, StatementValidationError) as exc:
            return Response(str(exc).encode(), status_code=400)
        for statement in statements:
            statement.setdefault("id", str(uuid.uuid4()))
        await asyncio.to_thread(store.insert, statements)
        ids = [statement["id"] for statement in statements]
        return Response(json.dumps(ids).encode(), media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="the SQLite file (created)")
    args = parser.parse_args()
    uvicorn.run(make_app(args.path), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
