"""Upgrading: data written by an earlier version is found again, nothing lost."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import bson
from bson import ObjectId

from lrs.config import Settings
from lrs.services import build_services
from lrs.storage.statements import StatementQuery, StatementRepository
from lrs.xapi.comparison import statements_equivalent
from tests.conftest import statement

VERB = "http://adlnet.gov/expapi/verbs/experienced"


def _write_legacy_collection(directory: Path, name: str, docs: list[dict[str, Any]]) -> None:
    """A collection as earlier versions stored it (litemongo: one SQLite file per collection,
    BSON documents keyed by their encoded _id)."""
    connection = sqlite3.connect(directory / name)
    with connection:
        connection.execute("CREATE TABLE documents(_id PRIMARY KEY, doc)")
        connection.executemany(
            "INSERT INTO documents VALUES (?, ?)",
            [(f"o:{doc['_id']}", bson.encode(doc)) for doc in docs],
        )
    connection.close()


async def _documents_as_an_earlier_version_wrote_them(n: int) -> list[dict[str, Any]]:
    """Statement documents from today's repository, minus what the earlier version lacked."""
    from lrs.storage.database import open_database

    settings = Settings(storage="memory", database=f"tmp{uuid.uuid4().hex[:8]}")
    database = open_database(settings)
    repository = StatementRepository(database)
    batch = [
        {**statement(), "id": str(uuid.uuid4()), "verb": {"id": VERB}, "stored": "x"}
        for _ in range(n)
    ]
    await repository.insert_batch("default", batch, statements_equivalent)
    docs = await repository.statements.find({})
    await database.close()
    for number, doc in enumerate(docs):
        doc.pop("terms")
        # Schema 2 kept the outbox as markers on each statement: the first one still owed both.
        doc["derived"] = doc["fanned_out"] = number > 0
    return docs


async def test_an_earlier_versions_data_directory_is_imported_and_upgraded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    legacy = data / "lrs"
    legacy.mkdir(parents=True)
    docs = await _documents_as_an_earlier_version_wrote_them(5)
    _write_legacy_collection(legacy, "statements", docs)
    _write_legacy_collection(legacy, "documents", [{"_id": ObjectId(), "store": "default"}])
    (legacy / "statements-wal").write_bytes(b"")  # SQLite side files are not collections

    settings = Settings(storage="embedded", data_dir=data, database="lrs", redis_url=None)
    services = build_services(settings)
    await services.start(background=False)
    try:
        page = await services.statements.query("default", StatementQuery(verb=VERB, limit=50))
        assert sorted(s["id"] for s in page.statements) == sorted(d["id"] for d in docs)
        assert await services.database["documents"].count({"store": "default"}) == 1
    finally:
        await services.close()

    # The original is kept beside the new file; a restart neither imports nor migrates again.
    assert (data / "lrs.before-upgrade" / "statements").is_file()
    assert not legacy.exists() and (data / "lrs.sqlite3").is_file()
    services = build_services(settings)
    await services.start(background=False)
    try:
        assert await services.statements.migrate() == 0
        assert await services.statements.statements.count({}) == 5
    finally:
        await services.close()


async def test_statements_without_terms_are_upgraded_in_place(tmp_path: Path) -> None:
    """MongoDB deployments keep their database: the start-up migration adds what is missing."""
    settings = Settings(storage="embedded", data_dir=tmp_path, database="lrs", redis_url=None)
    services = build_services(settings)
    await services.start(background=False)
    try:
        docs = await _documents_as_an_earlier_version_wrote_them(3)
        await services.statements.statements.insert_many(docs)
        await services.statements.meta.delete_many({})
        assert (
            await services.statements.query("default", StatementQuery(verb=VERB))
        ).statements == []
        assert await services.statements.migrate() == 3 + 2  # terms, and two outbox entries
        page = await services.statements.query("default", StatementQuery(verb=VERB))
        assert len(page.statements) == 3
        # What the old markers owed is in the outbox now; what they did not owe is not.
        outbox = services.statements.outbox
        ids = [doc["id"] for doc in docs]
        assert await outbox.owed("derive", "default", ids) == {docs[0]["id"]}
        assert await outbox.owed("forward", "default", ids) == {docs[0]["id"]}
    finally:
        await services.close()


async def test_statement_texts_from_before_schema_4_get_context_activities_as_arrays(
    tmp_path: Path,
) -> None:
    """Earlier versions kept a statement's text as received; the exact format now serves the
    stored text as it is, so the migration rewrites a single contextActivities object as an
    array (Data 2.4.6.2), once, and leaves every other text alone."""
    settings = Settings(storage="embedded", data_dir=tmp_path, database="lrs", redis_url=None)
    services = build_services(settings)
    await services.start(background=False)
    try:
        docs = await _documents_as_an_earlier_version_wrote_them(2)
        single = {"parent": {"id": "http://example.com/parent"}}
        as_received = json.loads(docs[0]["statement"])
        as_received["context"] = {"contextActivities": single}
        docs[0]["statement"] = json.dumps(as_received)
        untouched = docs[1]["statement"]
        await services.statements.statements.insert_many(docs)
        await services.statements.meta.replace_one(
            {"_id": "statements"}, {"_id": "statements", "schema": 3}, upsert=True
        )
        # terms of both (the helper drops them), two outbox entries, the one text
        assert await services.statements.migrate() == 2 + 2 + 1
        stored = {
            doc["id"]: doc["statement"]
            for doc in await services.statements.statements.find(
                {}, projection={"statement": 1, "id": 1}
            )
        }
        assert json.loads(stored[docs[0]["id"]])["context"]["contextActivities"] == {
            "parent": [{"id": "http://example.com/parent"}]
        }
        assert stored[docs[1]["id"]] == untouched
        page = await services.statements.query("default", StatementQuery(verb=VERB))
        assert {s["id"] for s in page.statements} == {doc["id"] for doc in docs}
        assert await services.statements.migrate() == 0
    finally:
        await services.close()
