"""The one place that talks to a document store driver.

Three back ends share one small async interface (`Collection`):
- MongoDB through `pymongo.AsyncMongoClient` (production);
- the embedded store (`lrs.storage.embedded`, MongoDB's document model on SQLite), run on one
  dedicated thread that owns its connection;
- `mongomock-motor` in memory, for tests and throwaway runs.
Repositories (statements, credentials, documents, ...) use only this interface, so the same
code and the same tests run on all three.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from lrs.config import Settings
from lrs.storage.unit import (
    Context,
    LastStoredKey,
    Op,
    Sleep,
    StoredClock,
    Work,
    drive,
    drive_async,
)
from lrs.xapi.timestamps import monotonic_now_micros

log = logging.getLogger("lrs.storage")
T = TypeVar("T")
Filter = Mapping[str, Any]
Sort = Sequence[tuple[str, int]]


class DuplicateKeys(Exception):
    """An unordered insert hit unique-index violations; `indexes` are the positions not inserted."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__(f"duplicate keys at positions {indexes}")
        self.indexes = indexes


class Collection:
    """Async collection over a driver collection whose methods are awaitable (pymongo async API,
    mongomock-motor)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    async def insert_many(self, docs: list[dict[str, Any]]) -> None:
        """Unordered insert; raises DuplicateKeys listing the documents that were not inserted."""
        if not docs:
            return
        try:
            await self._raw.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            raise _duplicates_or_raise(exc) from exc

    async def insert_one(self, doc: dict[str, Any]) -> None:
        try:
            await self._raw.insert_one(doc)
        except DuplicateKeyError as exc:
            raise DuplicateKeys([0]) from exc

    async def find(
        self,
        filter: Filter,
        *,
        projection: Mapping[str, Any] | None = None,
        sort: Sort | None = None,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        cursor = self._raw.find(dict(filter), projection)
        if sort:
            cursor = cursor.sort(list(sort))
        if limit:
            cursor = cursor.limit(limit)
        return await cursor.to_list(None)

    async def find_one(
        self, filter: Filter, *, projection: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        return await self._raw.find_one(dict(filter), projection)

    async def update_one(
        self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False
    ) -> int:
        result = await self._raw.update_one(dict(filter), dict(update), upsert=upsert)
        return result.matched_count + (1 if result.upserted_id is not None else 0)

    async def update_many(self, filter: Filter, update: Mapping[str, Any]) -> int:
        result = await self._raw.update_many(dict(filter), dict(update))
        return result.matched_count

    async def find_one_and_update(
        self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False
    ) -> dict[str, Any] | None:
        return await self._raw.find_one_and_update(
            dict(filter), dict(update), upsert=upsert, return_document=ReturnDocument.AFTER
        )

    async def replace_one(
        self, filter: Filter, doc: Mapping[str, Any], *, upsert: bool = False
    ) -> int:
        result = await self._raw.replace_one(dict(filter), dict(doc), upsert=upsert)
        return result.matched_count + (1 if result.upserted_id is not None else 0)

    async def delete_many(self, filter: Filter) -> int:
        result = await self._raw.delete_many(dict(filter))
        return result.deleted_count

    async def count(self, filter: Filter) -> int:
        return await self._raw.count_documents(dict(filter))

    async def distinct(self, key: str, filter: Filter) -> list[Any]:
        return await self._raw.distinct(key, dict(filter))

    async def create_index(
        self,
        keys: Sort,
        *,
        unique: bool = False,
        name: str | None = None,
        partial: str | None = None,
    ) -> None:
        """`partial`: index only the documents that have this field (so that documents that
        leave it out cost no index entry)."""
        options: dict[str, Any] = {"unique": unique}
        if name:
            options["name"] = name
        if partial:
            options["partialFilterExpression"] = {partial: {"$exists": True}}
        try:
            await self._raw.create_index(list(keys), **options)
        except OperationFailure as exc:
            if exc.code not in (85, 86):  # IndexOptionsConflict, IndexKeySpecsConflict
                raise
            # Declared with other options by an earlier version: rebuilt with these.
            await self.drop_index(keys)
            await self._raw.create_index(list(keys), **options)

    async def drop_index(self, keys: Sort) -> bool:
        """Drop the index on exactly these keys, if there is one; True if one was dropped."""
        wanted = [(key, direction) for key, direction in keys]
        for name, info in (await self._raw.index_information()).items():
            if [(k, int(d)) for k, d in info["key"]] == wanted:
                await self._raw.drop_index(name)
                return True
        return False


class EmbeddedOps:
    """The `Collection` semantics over one embedded collection, synchronously: what both the
    async adapter below and units of work running on the store's thread call."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def insert_many(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        refused = self._raw.insert_many(docs)
        if refused:
            raise DuplicateKeys(refused)

    def insert_one(self, doc: dict[str, Any]) -> None:
        if self._raw.insert_many([doc]):
            raise DuplicateKeys([0])

    def find(
        self,
        filter: Filter,
        *,
        projection: Mapping[str, Any] | None = None,
        sort: Sort | None = None,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        return self._raw.find(filter, projection, sort, limit)

    def find_one(
        self, filter: Filter, *, projection: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        return self._raw.find_one(filter, projection)

    def update_one(self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False) -> int:
        matched, after = self._raw.update(filter, update, upsert=upsert)
        return matched + (1 if upsert and not matched and after is not None else 0)

    def update_many(self, filter: Filter, update: Mapping[str, Any]) -> int:
        matched, _ = self._raw.update(filter, update, many=True)
        return matched

    def find_one_and_update(
        self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False
    ) -> dict[str, Any] | None:
        _, after = self._raw.update(filter, update, upsert=upsert)
        return after

    def replace_one(self, filter: Filter, doc: Mapping[str, Any], *, upsert: bool = False) -> int:
        matched, after = self._raw.update(filter, dict(doc), upsert=upsert)
        return matched + (1 if upsert and not matched and after is not None else 0)

    def delete_many(self, filter: Filter) -> int:
        return self._raw.delete_many(filter)

    def count(self, filter: Filter) -> int:
        return self._raw.count(filter)

    def distinct(self, key: str, filter: Filter) -> list[Any]:
        return self._raw.distinct(key, filter)

    def create_index(
        self,
        keys: Sort,
        *,
        unique: bool = False,
        name: str | None = None,
        partial: str | None = None,
    ) -> None:
        fields = [key for key, _ in keys]
        existing = next((i for i in self._raw.indexes if i.fields == fields), None)
        if existing is not None and existing.unique == unique and existing.partial != partial:
            # Declared partial (or not) by an earlier version: rebuilt as declared now.
            self._raw.drop_index(fields)
        self._raw.create_index(list(keys), unique, name, partial)

    def drop_index(self, keys: Sort) -> bool:
        return self._raw.drop_index([key for key, _ in keys])


_WRITES = frozenset(
    {
        "insert_many",
        "insert_one",
        "update_one",
        "update_many",
        "find_one_and_update",
        "replace_one",
        "delete_many",
        "create_index",
        "drop_index",
    }
)


class EmbeddedCollectionAdapter(Collection):
    """The same interface over the embedded store: each method runs its `EmbeddedOps` twin on
    the store's own thread (writes are committed in groups there, see `_DedicatedThread`)."""

    def __init__(self, ops: EmbeddedOps, thread: _DedicatedThread) -> None:
        super().__init__(ops)
        self._ops = ops
        self._thread = thread


def _on_store_thread(name: str) -> Any:
    write = name in _WRITES

    async def method(self: EmbeddedCollectionAdapter, *args: Any, **kwargs: Any) -> Any:
        return await self._thread.run(write, getattr(self._ops, name), *args, **kwargs)

    method.__name__ = name
    method.__doc__ = getattr(Collection, name).__doc__
    return method


_METHODS = (
    "insert_many",
    "insert_one",
    "find",
    "find_one",
    "update_one",
    "update_many",
    "find_one_and_update",
    "replace_one",
    "delete_many",
    "count",
    "distinct",
    "create_index",
    "drop_index",
)
for _name in _METHODS:
    setattr(EmbeddedCollectionAdapter, _name, _on_store_thread(_name))


def _duplicates_or_raise(exc: BulkWriteError) -> Exception:
    errors = exc.details.get("writeErrors", [])
    if errors and all(error.get("code") == 11000 for error in errors):
        return DuplicateKeys(sorted(error["index"] for error in errors))
    return exc


class Database:
    """A named database on one of the back ends; hands out `Collection`s and runs units of
    work (`lrs.storage.unit`)."""

    def __init__(
        self,
        kind: str,
        collection_factory: Callable[[str], Collection],
        runner: Callable[[Work[Any], bool], Awaitable[Any]] | None = None,
    ) -> None:
        self.kind = kind
        self._factory = collection_factory
        self._collections: dict[str, Collection] = {}
        self._close_hooks: list[Callable[[], Any]] = []
        self._runner = runner
        # Embedded: a unit of work runs in one transaction (see `run`).
        self.context = Context(atomic=runner is not None)
        self._change_mark: Callable[[], Awaitable[int]] | None = None
        self._read_now: Callable[[Work[Any]], Any] | None = None

    def __getitem__(self, name: str) -> Collection:
        if name not in self._collections:
            self._collections[name] = self._factory(name)
        return self._collections[name]

    async def run(self, work: Work[T], *, write: bool = True) -> T:
        """Run a unit of work: on the embedded store as one job (one transaction when it
        writes), elsewhere operation by operation."""
        if self._runner is not None:
            return await self._runner(work, write)
        return await drive_async(work, self._execute)

    async def read_now(self, work: Work[T]) -> T:
        """Run a small read-only unit (a point read) without queueing behind writes. On the
        embedded store it runs at once on the calling thread, on a connection of its own: a
        WAL reader never waits for a writer, so it reads what was committed when it started
        even while the store's thread is busy with a long write group. For reads every request
        waits for (the credentials revision): behind the store's queue, no request could even
        start while a batch committed. Elsewhere it is `run`."""
        if self._read_now is not None:
            return self._read_now(work)
        return await self.run(work, write=False)

    async def change_mark(self) -> int | None:
        """A number that moves whenever another connection commits a write (embedded store:
        SQLite's data_version), so a poller can skip looking when nothing changed; None where
        the back end cannot tell (look every time)."""
        return await self._change_mark() if self._change_mark is not None else None

    async def _execute(self, op: Op | StoredClock | LastStoredKey | Sleep) -> Any:
        if isinstance(op, StoredClock):
            return monotonic_now_micros()
        if isinstance(op, LastStoredKey):
            raise RuntimeError("only the embedded store keeps stored keys in commit order")
        if isinstance(op, Sleep):
            return await asyncio.sleep(op.seconds)
        return await getattr(self[op.collection], op.method)(*op.args, **op.kwargs)

    async def close(self) -> None:
        for hook in self._close_hooks:
            result = hook()
            if asyncio.iscoroutine(result):
                await result


def open_database(settings: Settings) -> Database:
    kind = settings.storage_kind
    if kind == "mongodb":
        return _open_mongodb(settings)
    if kind == "memory":
        return _open_memory(settings.database)
    return open_embedded(
        settings.data_dir,
        settings.database,
        settings.embedded_synchronous,
        settings.embedded_cache_mib,
    )


def _open_mongodb(settings: Settings) -> Database:
    from pymongo import AsyncMongoClient

    if not settings.mongodb_url:
        raise ValueError("LRS_MONGODB_URL is required for the mongodb storage")
    client: Any = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    raw_db = client[settings.database]
    database = Database("mongodb", lambda name: Collection(raw_db[name]))
    database._close_hooks.append(client.close)
    return database


def _open_memory(name: str) -> Database:
    from mongomock_motor import AsyncMongoMockClient

    client = AsyncMongoMockClient()
    raw_db = client[name]
    return Database("memory", lambda collection: Collection(raw_db[collection]))


# What `Database.read_now` may run.
_READ_METHODS = frozenset({"find", "find_one", "count", "distinct"})

# Work on the embedded store's one thread comes in two lanes. Progress derivation marks its
# calls urgent (`urgent_storage_calls`): in one lane with the requests, each of its reads and
# writes would wait behind every request queued before it, and progress would stop being live
# exactly when learners are most active. Urgent calls go first, but at most `_URGENT_STREAK` in
# a row while requests wait, so derivation cannot starve requests.
_URGENT_STREAK = 4
_urgent: contextvars.ContextVar[bool] = contextvars.ContextVar("lrs_storage_urgent", default=False)
# Writes queued together commit together (group commit): one COMMIT for up to this many.
_GROUP_MAX = 64


def urgent_storage_calls() -> None:
    """From now on, in the current task, embedded-store calls take the urgent lane."""
    _urgent.set(True)


class _Job:
    __slots__ = ("fn", "future", "write", "outcome")

    def __init__(self, fn: Callable[[], Any], write: bool) -> None:
        self.fn = fn
        self.write = write
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.outcome: tuple[bool, Any] = (False, None)

    def execute(self) -> None:
        """Run, keeping the outcome for `settle` (a write's result is only valid once its
        group committed)."""
        try:
            self.outcome = (True, self.fn())
        except BaseException as exc:
            self.outcome = (False, exc)

    def settle(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        ok, value = self.outcome
        if ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(value)


class _DedicatedThread:
    """A single worker thread that owns the embedded store's connection for its whole life.

    Writes that are queued together run in one SQLite transaction, each in its own savepoint
    (a failing one is rolled back alone), and commit together: their callers hear back only
    after that COMMIT, so nobody is ever told of a write that is not durable.
    """

    def __init__(self) -> None:
        self._lanes: tuple[collections.deque[_Job], collections.deque[_Job]] = (
            collections.deque(),  # urgent
            collections.deque(),  # normal
        )
        self._ready = threading.Condition()
        self._streak = 0
        self._closing = False
        # (begin, commit, rollback) of a write group; set once the store is open.
        self.group: tuple[Callable[[], None], Callable[[], None], Callable[[], None]] | None = None
        self.before_job: Callable[[], None] | None = None  # called before each job runs
        self._thread = threading.Thread(target=self._work, name="lrs-embedded", daemon=True)
        self._thread.start()

    def _pick(self, writes_only: bool) -> _Job | None:
        """The next job by lane priority (caller holds the lock); with `writes_only`, None
        unless that job is a write."""
        urgent, normal = self._lanes
        lane = urgent if urgent and (self._streak < _URGENT_STREAK or not normal) else normal
        if not lane or (writes_only and not lane[0].write):
            return None
        self._streak = self._streak + 1 if lane is urgent else 0
        return lane.popleft()

    def _next(self) -> _Job | None:
        with self._ready:
            while True:
                job = self._pick(writes_only=False)
                if job is not None:
                    return job
                if self._closing:
                    return None
                self._ready.wait()

    def _work(self) -> None:
        while (job := self._next()) is not None:
            if self.before_job is not None:
                self.before_job()
            if not job.write or self.group is None:
                job.execute()
                job.settle()
                continue
            begin, commit, rollback = self.group
            jobs = [job]
            begin()
            job.execute()
            while len(jobs) < _GROUP_MAX:
                with self._ready:
                    more = self._pick(writes_only=True)
                if more is None:
                    break
                jobs.append(more)
                more.execute()
            try:
                commit()
            except BaseException as exc:
                rollback()
                for failed in jobs:
                    failed.outcome = (False, exc)
            for done in jobs:
                done.settle()

    def _submit(self, urgent: bool, write: bool, fn: Callable[[], Any]) -> _Job:
        job = _Job(fn, write)
        with self._ready:
            self._lanes[0 if urgent else 1].append(job)
            self._ready.notify()
        return job

    async def run(self, write: bool, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        job = self._submit(_urgent.get(), write, lambda: fn(*args, **kwargs))
        return await asyncio.wrap_future(job.future)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._submit(False, False, lambda: fn(*args, **kwargs)).future.result()

    def shutdown(self) -> None:
        with self._ready:  # the thread finishes what is queued, then stops
            self._closing = True
            self._ready.notify()
        self._thread.join()


def open_embedded(
    data_dir: Any, name: str, synchronous: str = "full", cache_mib: int = 64
) -> Database:
    """`synchronous`, `cache_mib`: see `EmbeddedStore` (LRS_EMBEDDED_SYNCHRONOUS,
    LRS_EMBEDDED_CACHE_MIB)."""
    import pathlib

    from lrs.storage.embedded import EmbeddedStore, import_legacy_layout

    path = pathlib.Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    thread = _DedicatedThread()
    file = path / f"{name}.sqlite3"
    legacy = path / name
    if legacy.is_dir() and not file.exists():
        # Written by an earlier version: copy it into a staging file that takes the real name
        # only once complete (a crash meanwhile means starting over), keep the original.
        staging = path / f"{name}.sqlite3.importing"
        for leftover in path.glob(f"{staging.name}*"):
            leftover.unlink()
        staging_store = thread.call(EmbeddedStore, str(staging))
        counts = thread.call(import_legacy_layout, staging_store, legacy)
        thread.call(staging_store.close)
        staging.rename(file)
        legacy.rename(path / f"{name}.before-upgrade")
        log.warning("imported %s from %s (kept as %s.before-upgrade)", counts, legacy, name)
    store: EmbeddedStore = thread.call(EmbeddedStore, str(file), synchronous, cache_mib)
    thread.group = (store.begin, store.commit, store.rollback)
    store.refresh_per_job = True
    thread.before_job = store.expire_refresh
    ops: dict[str, EmbeddedOps] = {}

    def ops_for(collection: str) -> EmbeddedOps:
        # Only ever called on the store's thread (or before it serves anyone).
        if collection not in ops:
            ops[collection] = EmbeddedOps(store.collection(collection))
        return ops[collection]

    def execute(op: Op | StoredClock | LastStoredKey | Sleep) -> Any:
        if isinstance(op, StoredClock):
            return store.next_stored_key()
        if isinstance(op, LastStoredKey):
            return store.last_stored_key()
        if isinstance(op, Sleep):
            # Units only wait for other writers where writes are not atomic: never here.
            raise RuntimeError("a unit of work may not wait inside an embedded transaction")
        return getattr(ops_for(op.collection), op.method)(*op.args, **op.kwargs)

    def run_unit(work: Work[Any], write: bool) -> Any:
        if not write:
            return drive(work, execute)
        with store.write():  # inside the thread's group: a savepoint
            return drive(work, execute)

    async def runner(work: Work[Any], write: bool) -> Any:
        return await thread.run(write, run_unit, work, write)

    database = Database(
        "embedded",
        lambda collection: EmbeddedCollectionAdapter(thread.call(ops_for, collection), thread),
        runner,
    )

    async def change_mark() -> int:
        return await thread.run(False, store.data_version)

    database._change_mark = change_mark
    # Opened on the store's thread: opening may write (a new file's set-up) and so wait for
    # the write lock, which the event loop must never do.
    reader: EmbeddedStore = thread.call(EmbeddedStore, str(file), "full", cache_mib)
    reader_ops: dict[str, EmbeddedOps] = {}
    reader_lock = threading.Lock()  # one connection: one reader at a time (any thread)

    def read_execute(op: Op | StoredClock | LastStoredKey | Sleep) -> Any:
        if isinstance(op, LastStoredKey):
            return reader.last_stored_key()
        if not isinstance(op, Op) or op.method not in _READ_METHODS:
            raise RuntimeError(f"read_now runs reads only, not {op!r}")
        if op.collection not in reader_ops:
            reader_ops[op.collection] = EmbeddedOps(reader.collection(op.collection))
        return getattr(reader_ops[op.collection], op.method)(*op.args, **op.kwargs)

    def read_now(work: Work[Any]) -> Any:
        with reader_lock:
            return drive(work, read_execute)

    database._read_now = read_now

    def close() -> None:
        thread.call(reader.close)
        thread.call(store.close)
        thread.shutdown()

    database._close_hooks.append(close)
    return database
