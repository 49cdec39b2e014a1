"""The embedded store's two files: derived collections (progress records, their sequence, the
catalogue) apart from the statements, each file with its own write lock (lrs.storage.database).

What a user relies on: statement writes never wait for a writer of progress (the derivation
process), a unit that declared what it writes cannot write elsewhere, both files are locked in
one order (no deadlock), a store written before the split keeps working from its one file, and
the derived file is durable before the statements' file records derivation as done."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import lrs.storage.embedded as embedded
from lrs.storage.database import (
    DERIVED_COLLECTIONS,
    DERIVED_FILE_SUFFIX,
    Database,
    open_embedded,
)
from lrs.storage.embedded import EmbeddedStore
from lrs.storage.progress import COUNTERS, COUNTS, COURSES, RECORDS, ROWS
from lrs.storage.statement_writes import BATCH_WRITES
from lrs.storage.unit import Work, find_one, insert_many

STATEMENTS = frozenset({"statements"})


def _collections(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM collections")}


def _insert(collection: str, doc: dict[str, Any]) -> Work[None]:
    yield insert_many(collection, [doc])


def _insert_both(statement: dict[str, Any], record: dict[str, Any]) -> Work[None]:
    yield insert_many("statements", [statement])
    yield insert_many("progress", [record])


async def _close(database: Database) -> None:
    await database.close()


def test_the_derived_collections_are_those_derivation_writes() -> None:
    assert {COURSES, ROWS, COUNTS, RECORDS, COUNTERS} == DERIVED_COLLECTIONS
    assert not DERIVED_COLLECTIONS & BATCH_WRITES


def test_a_new_store_keeps_derived_collections_in_a_file_of_their_own(tmp_path: Path) -> None:
    async def scenario() -> None:
        database = open_embedded(tmp_path, "lrs")
        await database["statements"].insert_one({"_id": "s1"})
        await database["progress"].insert_one({"_id": "r1"})
        await database["courses"].insert_one({"_id": "c1"})
        assert await database["progress"].find_one({"_id": "r1"}) == {"_id": "r1"}
        await database.close()

    asyncio.run(scenario())
    main = _collections(tmp_path / "lrs.sqlite3")
    derived = _collections(tmp_path / f"lrs{DERIVED_FILE_SUFFIX}.sqlite3")
    assert "statements" in main and not main & DERIVED_COLLECTIONS
    assert {"progress", "courses"} <= derived and "statements" not in derived


def test_a_store_written_before_the_split_keeps_everything_in_one_file(tmp_path: Path) -> None:
    old = EmbeddedStore(str(tmp_path / "lrs.sqlite3"))
    old.collection("progress").insert_many([{"_id": "r1", "status": "completed"}])
    old.collection("statements").insert_many([{"_id": "s1"}])
    old.close()

    async def scenario() -> None:
        database = open_embedded(tmp_path, "lrs")
        assert await database["progress"].find_one({"_id": "r1"}) is not None
        await database["progress"].insert_one({"_id": "r2"})
        await database.run(_insert_both({"_id": "s2"}, {"_id": "r3"}))
        await database.close()

    asyncio.run(scenario())
    assert not (tmp_path / f"lrs{DERIVED_FILE_SUFFIX}.sqlite3").exists()
    with sqlite3.connect(tmp_path / "lrs.sqlite3") as db:
        table = db.execute("SELECT tbl FROM collections WHERE name = 'progress'").fetchone()[0]
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 3


def test_statement_writes_go_on_while_another_process_writes_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The derivation process holds the derived file's write lock while it writes records; a
    batch of statements (which declares its writes) does not wait for it. A unit that may write
    anything locks both files, so it waits, and fails once the lock wait is over (the store's
    thread then goes on serving)."""
    monkeypatch.setattr(embedded, "_LOCK_WAIT_SECONDS", 1)

    async def scenario() -> None:
        database = open_embedded(tmp_path, "lrs")
        await database["progress"].insert_one({"_id": "r0"})  # the derived file exists
        other = sqlite3.connect(tmp_path / f"lrs{DERIVED_FILE_SUFFIX}.sqlite3")
        other.isolation_level = None
        other.execute("BEGIN IMMEDIATE")  # another process, mid-way through its write
        try:
            await database.run(_insert("statements", {"_id": "s1"}), writes=BATCH_WRITES)
            await database["statements"].insert_one({"_id": "s2"})
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await database.run(_insert("statements", {"_id": "s3"}))
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await database["progress"].insert_one({"_id": "r1"})
        finally:
            other.execute("ROLLBACK")
            other.close()
        await database.run(_insert("statements", {"_id": "s3"}))
        ids = {doc["_id"] for doc in await database["statements"].find({})}
        assert ids == {"s1", "s2", "s3"}
        await database.close()

    asyncio.run(scenario())


def test_a_unit_that_declared_its_writes_cannot_write_elsewhere(tmp_path: Path) -> None:
    async def scenario() -> None:
        database = open_embedded(tmp_path, "lrs")
        with pytest.raises(RuntimeError, match="'progress'"):
            await database.run(
                _insert_both({"_id": "s1"}, {"_id": "r1"}), writes=frozenset({"statements"})
            )
        # All or nothing: the statement written before the refused write is gone too.
        assert await database["statements"].find_one({"_id": "s1"}) is None
        assert await database["progress"].find_one({"_id": "r1"}) is None
        await database.run(_insert_both({"_id": "s1"}, {"_id": "r1"}))
        assert await database.run(_found("statements", "s1"), write=False)
        assert await database.run(_found("progress", "r1"), write=False)
        await database.close()

    asyncio.run(scenario())


def _found(collection: str, doc_id: str) -> Work[bool]:
    doc = yield find_one(collection, {"_id": doc_id})
    return doc is not None


def test_writers_of_both_files_on_two_connections_never_deadlock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two connections each writing one file, the other, and both, at once: every write ends
    (both files are always locked in the same order, so neither holds one while the other
    holds the second)."""
    monkeypatch.setattr(embedded, "_LOCK_WAIT_SECONDS", 5)

    async def writer(database: Database, name: str) -> None:
        for n in range(40):
            statement, record = {"_id": f"{name}-s{n}"}, {"_id": f"{name}-r{n}"}
            if n % 3 == 0:
                await database.run(_insert_both(statement, record))
            elif n % 3 == 1:
                await database.run(_insert("progress", record), writes=DERIVED_COLLECTIONS)
                await database.run(_insert("statements", statement), writes=STATEMENTS)
            else:
                await asyncio.gather(
                    database.run(_insert("statements", statement), writes=STATEMENTS),
                    database.run(_insert("progress", record), writes=DERIVED_COLLECTIONS),
                )

    async def scenario() -> None:
        first = open_embedded(tmp_path, "lrs")
        second = open_embedded(tmp_path, "lrs")
        await asyncio.gather(writer(first, "a"), writer(second, "b"))
        assert await first["statements"].count({}) == 80
        assert await second["progress"].count({}) == 80
        await first.close()
        await second.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_progress_is_durable_before_the_statements_file_commits(
    tmp_path: Path, synchronous: str
) -> None:
    """With synchronous NORMAL (the derivation process) a commit reaches the disk only at a
    later sync, file by file; so before the statements' file commits (e.g. outbox entries
    deleted once their progress is written), the derived file's commits are synced (one synced
    commit of its own, marked in its clock). Where every commit is synced, nothing is added."""

    async def scenario() -> None:
        database = open_embedded(tmp_path, "lrs", synchronous)
        await database.run(_insert("progress", {"_id": "r1"}), writes=DERIVED_COLLECTIONS)
        assert _synced_mark(tmp_path) is None  # nothing forced yet
        await database.run(_insert("outbox", {"_id": "e1"}), writes=frozenset({"outbox"}))
        marked = _synced_mark(tmp_path)
        assert (marked is not None) == (synchronous == "normal")
        await database.run(_insert("outbox", {"_id": "e2"}), writes=frozenset({"outbox"}))
        assert _synced_mark(tmp_path) == marked  # nothing new to sync
        await database.close()

    asyncio.run(scenario())


def _synced_mark(directory: Path) -> int | None:
    with sqlite3.connect(directory / f"lrs{DERIVED_FILE_SUFFIX}.sqlite3") as db:
        row = db.execute("SELECT value FROM clock WHERE name = 'synced'").fetchone()
    return None if row is None else int(row[0])


class _CommitFailsOnce:
    """The store's connection, except that its next COMMIT fails (a full disk, say)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.failed = False

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_group_whose_commit_fails_is_rolled_back_and_the_store_goes_on(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path / "lrs.sqlite3"))
    real = store._db
    store._db = _CommitFailsOnce(real)  # type: ignore[assignment]
    store.begin()
    store.collection("statements").insert_many([{"_id": "lost"}])
    with pytest.raises(sqlite3.OperationalError):
        store.commit()
    assert real.in_transaction  # SQLite keeps the transaction open after a failed COMMIT
    store.rollback()
    assert not real.in_transaction
    store.begin()
    store.collection("statements").insert_many([{"_id": "kept"}])
    store.commit()
    assert [doc["_id"] for doc in store.collection("statements").find({})] == ["kept"]
    store._db = real
    store.close()
