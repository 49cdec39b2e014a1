"""Units of work (lrs.storage.unit): one piece of storage logic, run atomically in one job on the
embedded store and step by step elsewhere, with the same operation semantics on both."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from lrs.config import Settings
from lrs.storage import unit
from lrs.storage.database import Database, DuplicateKeys, open_database
from lrs.storage.embedded import EmbeddedStore


def _database(backend: str, tmp_path: Any) -> Database:
    return open_database(Settings(storage=backend, data_dir=tmp_path, database="units"))


@pytest.fixture(params=["memory", "embedded"])
async def database(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    db = _database(request.param, tmp_path)
    await db["things"].create_index([("name", 1)], unique=True)
    yield db
    await db.close()


def insert_then(names: list[str], fail: bool) -> unit.Work[list[str]]:
    yield unit.insert_many("things", [{"name": n} for n in names])
    found = yield unit.find("things", {"name": {"$in": names}}, sort=[("name", 1)])
    if fail:
        raise RuntimeError("changed my mind")
    return [doc["name"] for doc in found]


async def test_a_unit_sees_its_own_writes_and_returns_its_result(database: Database) -> None:
    assert await database.run(insert_then(["a", "b"], fail=False)) == ["a", "b"]
    assert await database["things"].count({}) == 2


async def test_operations_raise_the_same_errors_into_the_unit(database: Database) -> None:
    await database["things"].insert_one({"name": "taken"})

    def clash() -> unit.Work[list[int]]:
        try:
            yield unit.insert_many("things", [{"name": "new"}, {"name": "taken"}])
        except DuplicateKeys as exc:
            return exc.indexes
        return []

    assert await database.run(clash()) == [1]
    assert await database["things"].count({"name": "new"}) == 1


async def test_a_failing_unit_leaves_nothing_on_the_embedded_store(tmp_path: Any) -> None:
    database = _database("embedded", tmp_path)
    try:
        assert database.context.atomic
        with pytest.raises(RuntimeError):
            await database.run(insert_then(["x", "y"], fail=True))
        assert await database["things"].count({}) == 0
    finally:
        await database.close()


async def test_memory_and_mongodb_units_are_not_atomic(tmp_path: Any) -> None:
    """What units that must be all-or-nothing are told, and why they carry their own protocol
    there: a failure leaves earlier steps in place."""
    database = _database("memory", tmp_path)
    assert not database.context.atomic
    with pytest.raises(RuntimeError):
        await database.run(insert_then(["x"], fail=True))
    assert await database["things"].count({}) == 1


async def test_writes_queued_together_commit_together_and_fail_alone(tmp_path: Any) -> None:
    """Group commit: many writes at once share transactions; one that fails is rolled back
    alone, and every caller hears back only what is durable."""
    database = _database("embedded", tmp_path)
    try:
        await database["things"].create_index([("name", 1)], unique=True)
        results = await asyncio.gather(
            *(database.run(insert_then([f"n{i}"], fail=i % 7 == 3)) for i in range(60)),
            return_exceptions=True,
        )
        failed = {i for i, r in enumerate(results) if isinstance(r, Exception)}
        assert failed == {i for i in range(60) if i % 7 == 3}
        stored = {doc["name"] for doc in await database["things"].find({})}
        assert stored == {f"n{i}" for i in range(60) if i not in failed}
    finally:
        await database.close()


def test_stored_keys_grow_in_commit_order_across_processes(tmp_path: Any) -> None:
    """Two connections on one file stand for two processes: every key taken is above every
    key taken before it, whichever connection took it."""
    path = str(tmp_path / "clock.sqlite3")
    first, second = EmbeddedStore(path), EmbeddedStore(path)
    keys = []
    for store in [first, second] * 50:
        with store.write():
            keys.append(store.next_stored_key())
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    first.close()
    second.close()


async def test_a_dropped_index_is_gone_and_its_table_number_not_reused(tmp_path: Any) -> None:
    database = _database("embedded", tmp_path)
    try:
        things = database["things"]
        await things.create_index([("a", 1)])
        await things.create_index([("b", 1)])
        await things.insert_many([{"a": 1, "b": 2}, {"a": 2, "b": 2}])
        assert await things.drop_index([("a", 1)])
        assert not await things.drop_index([("a", 1)])
        await things.create_index([("c", 1)])
        assert await things.count({"b": 2}) == 2
        await things.insert_one({"a": 3, "b": 3, "c": 1})
        assert await things.count({"c": 1}) == 1
        assert await things.count({"a": {"$gte": 1}}) == 3
    finally:
        await database.close()


async def test_a_partial_index_holds_only_documents_with_its_field(tmp_path: Any) -> None:
    """MongoDB's partialFilterExpression {field: {$exists: true}}: documents without the field
    cost no entry, and queries that could match them (null) still find them."""
    database = _database("embedded", tmp_path)
    try:
        things = database["things"]
        await things.create_index([("s", 1), ("ref", 1)], partial="ref")
        await things.insert_many(
            [{"s": 1, "n": n} for n in range(50)] + [{"s": 1, "ref": "x", "n": 50}]
        )
        raw = things._ops._raw  # type: ignore[attr-defined]
        index = next(i for i in raw.indexes if i.fields == ["s", "ref"])
        rows = raw._db.execute(f"SELECT count(*) FROM {index.table}").fetchone()[0]
        assert rows == 1
        assert [d["n"] for d in await things.find({"s": 1, "ref": {"$in": ["x"]}})] == [50]
        assert await things.count({"s": 1, "ref": None}) == 50  # missing matches null
        assert await things.count({"s": 1, "ref": {"$in": [None, "x"]}}) == 51
        await things.update_many({"n": {"$lt": 5}}, {"$set": {"ref": "y"}})
        assert await things.count({"s": 1, "ref": "y"}) == 5
        await things.update_many({"ref": "y"}, {"$unset": {"ref": ""}})
        assert raw._db.execute(f"SELECT count(*) FROM {index.table}").fetchone()[0] == 1
        # Declared again without the option (an earlier version's index): rebuilt as declared.
        await things.create_index([("s", 1), ("ref", 1)])
        index = next(i for i in raw.indexes if i.fields == ["s", "ref"])
        assert index.partial is None
        assert raw._db.execute(f"SELECT count(*) FROM {index.table}").fetchone()[0] == 51
    finally:
        await database.close()


@pytest.mark.parametrize(
    "extra",
    [
        {},  # no timestamp: it is the stored time
        {"timestamp": "2026-01-01T10:00:00.123Z"},
        {"stored": "2001-01-01T00:00:00Z"},  # a client's `stored` is replaced
        {"context": {"contextActivities": {"parent": {"id": "http://example.com/p"}}}},
        {"result": {"response": 'quote " and \\u00e9 and \\\\'}},
    ],
)
def test_a_drafted_document_is_the_statement_stamped_at_its_stored_key(
    extra: dict[str, Any],
) -> None:
    """The document drafted before the write (lrs.storage.statement_docs.draft_document) and
    completed with the batch's stored key holds what stamping the statement gives."""
    import json

    from lrs.storage.statement_docs import complete_document, draft_document
    from lrs.storage.statement_writes import _stamp
    from lrs.xapi.formats import context_activities_as_arrays

    statement: dict[str, Any] = {
        "id": "6690e6c9-3ef0-4ed3-8b37-7f3964730bee",
        "actor": {"mbox": "mailto:a@example.com", "name": "Zoë"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
        "object": {"id": "http://example.com/a"},
        "authority": {"mbox": "mailto:lrs@example.com"},
        **extra,
    }
    draft = draft_document(statement)
    stamped = dict(statement)
    stored = _stamp([stamped], 1_767_261_600_123_456)
    doc = complete_document("s", draft, stored, 1_767_261_600_123_456, False, [])
    assert json.loads(doc["statement"]) == context_activities_as_arrays(stamped)
    # Each member once (json.loads would quietly keep the last of two).
    assert doc["statement"].count('"stored"') == 1 and doc["statement"].count('"timestamp"') == 1
    assert stamped["stored"] == stored == "2026-01-01T10:00:00.123456Z"
    assert doc["stored_key"] == 1_767_261_600_123_456 and doc["id"] == statement["id"]


@pytest.mark.parametrize("backend", ["memory", "embedded"])
async def test_the_derivations_recheck_drops_exactly_the_statements_voided_since(
    backend: str, tmp_path: Any
) -> None:
    """A round reads its statements, then (where its writes are brief) folds them in a later
    unit: those voided in between are taken out of the fold, and only those."""
    from lrs.progress.deriver import _drop_voided
    from lrs.services import build_services
    from lrs.storage.statement_writes import voided_by_visible
    from tests.test_batch_atomicity import CREDENTIAL as credential

    services = build_services(Settings(storage=backend, data_dir=tmp_path, redis_url=None))
    services.after_store.clear()  # nothing derived: only what is stored matters here
    await services.start(background=False)

    def statement(statement_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": statement_id,
            "actor": {"mbox": "mailto:learner@example.com"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
            "object": {"id": "http://example.com/lesson"},
            **extra,
        }

    voided, kept, other_store = (str(uuid.uuid4()) for _ in range(3))
    voiding = {
        "id": str(uuid.uuid4()),
        "actor": {"mbox": "mailto:admin@example.com"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
        "object": {"objectType": "StatementRef", "id": voided},
    }
    try:
        await services.ingestion.store(
            credential, [statement(voided), statement(kept)], version="1.0.3"
        )
        folds: dict[Any, list[dict[str, Any]]] = {
            ("a", "c", "m1", None): [statement(voided), statement(kept)],
            ("a", "c", "m2", None): [statement(voided)],
        }
        await services.database.run(_drop_voided("default", folds))
        assert [len(statements) for statements in folds.values()] == [2, 1]  # none voided yet

        await services.ingestion.store(credential, [voiding], version="1.0.3")
        await services.database.run(_drop_voided("default", folds))
        assert folds == {("a", "c", "m1", None): [statement(kept)], ("a", "c", "m2", None): []}
        assert await services.database.run(
            voided_by_visible("default", [voided, kept, other_store])
        ) == {voided}
        assert await services.database.run(voided_by_visible("elsewhere", [voided])) == set()
    finally:
        await services.close()


async def test_read_now_does_not_wait_for_the_write_in_progress_and_sees_each_commit(
    tmp_path: Any,
) -> None:
    """On the embedded store, `read_now` answers from its own connection while the store's
    thread is inside a write: it sees what was committed before it started, never the write
    in progress, and the write once committed."""
    import threading

    database = _database("embedded", tmp_path)
    inside = threading.Event()
    release = threading.Event()

    def slow_write() -> unit.Work[None]:
        yield unit.StoredClock()
        yield unit.insert_one("meta", {"_id": "x", "n": 2})
        inside.set()
        release.wait(10)  # runs on the store's thread, inside the write transaction

    def read_x() -> unit.Work[Any]:
        doc = yield unit.find_one("meta", {"_id": "x"})
        return doc["n"] if doc else None

    def last_key() -> unit.Work[int]:
        return (yield unit.LastStoredKey())

    try:
        await database.run(_insert("y"))
        writing = asyncio.ensure_future(database.run(slow_write()))
        assert await asyncio.to_thread(inside.wait, 10)
        # Would wait for `release` if it queued behind the write; the write is not seen.
        assert await asyncio.wait_for(database.read_now(read_x()), 5) is None
        last = await database.read_now(last_key())
        release.set()
        await writing
        assert await database.read_now(read_x()) == 2
        assert await database.read_now(last_key()) > last  # the write's key, once committed

        def write_through_read_now() -> unit.Work[None]:
            yield unit.insert_one("meta", {"_id": "z"})

        with pytest.raises(RuntimeError, match="reads only"):
            await database.read_now(write_through_read_now())
        assert await database["meta"].count({"_id": "z"}) == 0
    finally:
        release.set()
        await database.close()


def _insert(name: str) -> unit.Work[None]:
    yield unit.insert_one("meta", {"_id": name, "n": 1})


async def test_read_now_elsewhere_is_an_ordinary_read(tmp_path: Any) -> None:
    database = _database("memory", tmp_path)
    await database["meta"].insert_one({"_id": "x", "n": 3})

    def read_x() -> unit.Work[Any]:
        doc = yield unit.find_one("meta", {"_id": "x"})
        return doc["n"]

    assert await database.read_now(read_x()) == 3
    await database.close()


@pytest.mark.parametrize(("derivation", "paced"), [("inprocess", True), ("process", False)])
async def test_the_credentials_revision_waits_in_the_store_queue_only_beside_derivation(
    tmp_path: Any, derivation: str, paced: bool
) -> None:
    """An API process that also derives reads the revision in the store's queue (requests
    start at the pace the store takes them, so its derivation keeps up); one that does not
    reads it at once, even while a write is in progress."""
    import threading

    from lrs.services import build_services

    services = build_services(
        Settings(storage="embedded", data_dir=tmp_path, redis_url=None, derivation=derivation)
    )
    assert services.authenticator.paced is paced
    inside, release = threading.Event(), threading.Event()

    def slow_write() -> unit.Work[None]:
        yield unit.insert_one("meta", {"_id": "slow"})
        inside.set()
        release.wait(10)

    try:
        writing = asyncio.ensure_future(services.database.run(slow_write()))
        assert await asyncio.to_thread(inside.wait, 10)
        reading = asyncio.ensure_future(services.authenticator._read_revision())
        done, _ = await asyncio.wait({reading}, timeout=1)
        assert bool(done) is not paced  # paced: still waiting behind the write
        release.set()
        await writing
        assert await reading == 0
    finally:
        release.set()
        await services.database.close()
