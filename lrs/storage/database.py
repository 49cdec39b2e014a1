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
import contextlib
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

    def __init__(self, ops: EmbeddedOps, thread: _DedicatedThread, locks: Locks) -> None:
        super().__init__(ops)
        self._ops = ops
        self._thread = thread
        self._locks = locks  # the file that holds the collection


def _on_store_thread(name: str) -> Any:
    write = name in _WRITES

    async def method(self: EmbeddedCollectionAdapter, *args: Any, **kwargs: Any) -> Any:
        call = getattr(self._ops, name)
        locks = self._locks if write else frozenset()
        return await self._thread.run_locking(write, locks, lambda: call(*args, **kwargs))

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
        runner: Callable[[Work[Any], bool, frozenset[str] | None], Awaitable[Any]] | None = None,
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

    async def run(
        self, work: Work[T], *, write: bool = True, writes: frozenset[str] | None = None
    ) -> T:
        """Run a unit of work: on the embedded store as one job (one transaction when it
        writes), elsewhere operation by operation.

        `writes` names the collections the unit may write (None: any). On the embedded store
        its transaction then locks only the files that hold them, so that writers of other
        files (the derivation process and the API) do not wait for one another; a write to
        another collection fails the unit."""
        if self._runner is not None:
            return await self._runner(work, write, writes)
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


# The files a write job takes the write lock of (positions in the store's list of files,
# see `open_embedded`); a group of writes commits together only if they lock the same files.
Locks = frozenset[int]


class _Job:
    __slots__ = ("fn", "future", "write", "outcome", "locks")

    def __init__(self, fn: Callable[[], Any], write: bool, locks: Locks = frozenset()) -> None:
        self.fn = fn
        self.write = write
        self.locks = locks
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
    """A single worker thread that owns the embedded store's connections for its whole life.

    Writes that are queued together (and lock the same files) run in one transaction, each in
    its own savepoint (a failing one is rolled back alone), and commit together: their callers
    hear back only after that COMMIT, so nobody is ever told of a write that is not durable.
    """

    def __init__(self) -> None:
        self._lanes: tuple[collections.deque[_Job], collections.deque[_Job]] = (
            collections.deque(),  # urgent
            collections.deque(),  # normal
        )
        self._ready = threading.Condition()
        self._streak = 0
        self._closing = False
        # (begin, commit, rollback) of a write group, given the files it locks; set once the
        # store is open.
        self.group: (
            tuple[Callable[[Locks], None], Callable[[Locks], None], Callable[[Locks], None]] | None
        ) = None
        self.before_job: Callable[[], None] | None = None  # called before each job runs
        self.all_files: Locks = frozenset({0})  # every file of the store (set once it is open)
        self._thread = threading.Thread(target=self._work, name="lrs-embedded", daemon=True)
        self._thread.start()

    def _pick(self, within: Locks | None = None) -> _Job | None:
        """The next job by lane priority (caller holds the lock); with `within`, None unless
        that job is a write that locks no other files (it can join the open group)."""
        urgent, normal = self._lanes
        lane = urgent if urgent and (self._streak < _URGENT_STREAK or not normal) else normal
        if not lane or (within is not None and not (lane[0].write and lane[0].locks <= within)):
            return None
        self._streak = self._streak + 1 if lane is urgent else 0
        return lane.popleft()

    def _next(self) -> _Job | None:
        with self._ready:
            while True:
                job = self._pick()
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
            try:
                begin(job.locks)
            except BaseException as exc:  # the lock never came: this write fails alone
                job.outcome = (False, exc)
                job.settle()
                continue
            job.execute()
            while len(jobs) < _GROUP_MAX:
                with self._ready:
                    more = self._pick(within=job.locks)
                if more is None:
                    break
                jobs.append(more)
                more.execute()
            try:
                commit(job.locks)
            except BaseException as exc:
                rollback(job.locks)
                for failed in jobs:
                    failed.outcome = (False, exc)
            for done in jobs:
                done.settle()

    def _submit(
        self, urgent: bool, write: bool, fn: Callable[[], Any], locks: Locks = frozenset()
    ) -> _Job:
        job = _Job(fn, write, locks)
        with self._ready:
            self._lanes[0 if urgent else 1].append(job)
            self._ready.notify()
        return job

    async def run(self, write: bool, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self.run_locking(write, self.all_files, lambda: fn(*args, **kwargs))

    async def run_locking(self, write: bool, locks: Locks, fn: Callable[[], Any]) -> Any:
        """Run `fn` as one job; a write takes the write lock of the files in `locks`."""
        job = self._submit(_urgent.get(), write, fn, locks)
        return await asyncio.wrap_future(job.future)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._submit(False, False, lambda: fn(*args, **kwargs)).future.result()

    def shutdown(self) -> None:
        with self._ready:  # the thread finishes what is queued, then stops
            self._closing = True
            self._ready.notify()
        self._thread.join()


# Collections kept in a file of their own on the embedded store: what derivation writes
# (progress records, their change sequence, the catalogue it grows: the collections of
# lrs.storage.progress). The derivation process writes them all the time; in the file of the
# statements, every API write waited for its write lock, and every API commit carried its
# pages to the disk. Apart, each file has its own write lock and log, and the two processes
# write side by side.
DERIVED_COLLECTIONS = frozenset(
    {"progress", "counters", "courses", "course_activities", "module_counts"}
)
DERIVED_FILE_SUFFIX = ".progress"


def open_embedded(
    data_dir: Any, name: str, synchronous: str = "full", cache_mib: int = 64
) -> Database:
    """`synchronous`, `cache_mib`: see `EmbeddedStore` (LRS_EMBEDDED_SYNCHRONOUS,
    LRS_EMBEDDED_CACHE_MIB).

    Two files: `<name>.sqlite3` holds the statements and everything else, and
    `<name>.progress.sqlite3` the `DERIVED_COLLECTIONS`. A store written before the split (its
    first file already holds derived collections) keeps them there, in one file."""
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
    main: EmbeddedStore = thread.call(EmbeddedStore, str(file), synchronous, cache_mib)
    stores = [main]
    one_file = any(thread.call(main.has_collection, c) for c in DERIVED_COLLECTIONS)
    derived_file = path / f"{name}{DERIVED_FILE_SUFFIX}.sqlite3"
    if not one_file:
        stores.append(thread.call(EmbeddedStore, str(derived_file), synchronous, cache_mib))
        main.before_write = stores[-1].make_durable
    thread.all_files = frozenset(range(len(stores)))

    def file_of(collection: str) -> int:
        return len(stores) - 1 if collection in DERIVED_COLLECTIONS else 0

    def files_for(writes: frozenset[str] | None) -> Locks:
        if writes is None:
            return thread.all_files
        return frozenset(file_of(collection) for collection in writes)

    def begin(locks: Locks) -> None:
        # Always in the same order (the statements' file first), so two writers that lock
        # both files cannot each hold one while waiting for the other.
        taken: list[EmbeddedStore] = []
        try:
            for position in sorted(locks):
                stores[position].begin()
                taken.append(stores[position])
        except BaseException:
            for store in reversed(taken):
                store.rollback()
            raise

    def commit(locks: Locks) -> None:
        # The derived file first, and durable before the statements' file commits: what that
        # file records as done (outbox entries deleted) must never survive a crash or power
        # cut that the derived records it stands for did not (with synchronous NORMAL, as in
        # the derivation process, commits reach the disk only at a sync, file by file). A
        # crash in between leaves work owed, which is derived again (folds are idempotent).
        # Any other write of the statements' file syncs the derived file before it takes the
        # lock (`before_write` below), not while it holds it.
        for position in sorted(locks, reverse=True):
            if position == 0 and len(locks) > 1:
                stores[-1].make_durable()
            stores[position].commit()

    def rollback(locks: Locks) -> None:
        for position in sorted(locks, reverse=True):
            stores[position].rollback()  # nothing to do for a file that committed already

    def expire_refresh() -> None:
        for store in stores:
            store.expire_refresh()

    thread.group = (begin, commit, rollback)
    for store in stores:
        store.refresh_per_job = True
    thread.before_job = expire_refresh
    ops: dict[str, EmbeddedOps] = {}

    def ops_for(collection: str) -> EmbeddedOps:
        # Only ever called on the store's thread (or before it serves anyone).
        if collection not in ops:
            ops[collection] = EmbeddedOps(stores[file_of(collection)].collection(collection))
        return ops[collection]

    def execute(op: Op | StoredClock | LastStoredKey | Sleep, locks: Locks | None) -> Any:
        if isinstance(op, StoredClock):
            return main.next_stored_key()
        if isinstance(op, LastStoredKey):
            return main.last_stored_key()
        if isinstance(op, Sleep):
            # Units only wait for other writers where writes are not atomic: never here.
            raise RuntimeError("a unit of work may not wait inside an embedded transaction")
        if locks is not None and op.method in _WRITES and file_of(op.collection) not in locks:
            raise RuntimeError(
                f"a unit of work that declared its writes also writes {op.collection!r}"
            )
        return getattr(ops_for(op.collection), op.method)(*op.args, **op.kwargs)

    def run_unit(work: Work[Any], write: bool, locks: Locks) -> Any:
        if not write:
            # No transaction: a write among its reads commits on its own (a discovery).
            return drive(work, lambda op: execute(op, None))
        with contextlib.ExitStack() as savepoints:  # inside the thread's group: savepoints
            for position in sorted(locks):
                savepoints.enter_context(stores[position].write())
            return drive(work, lambda op: execute(op, locks))

    async def runner(work: Work[Any], write: bool, writes: frozenset[str] | None) -> Any:
        locks = files_for(writes) if write else frozenset()
        return await thread.run_locking(write, locks, lambda: run_unit(work, write, locks))

    database = Database(
        "embedded",
        lambda collection: EmbeddedCollectionAdapter(
            thread.call(ops_for, collection), thread, frozenset({file_of(collection)})
        ),
        runner,
    )

    async def change_mark() -> int:
        # The statements' file: where new statements' outbox entries appear.
        return await thread.run(False, main.data_version)

    database._change_mark = change_mark
    # Opened on the store's thread: opening may write (a new file's set-up) and so wait for
    # the write lock, which the event loop must never do.
    readers: list[EmbeddedStore] = [
        thread.call(EmbeddedStore, str(file if position == 0 else derived_file), "full", cache_mib)
        for position in range(len(stores))
    ]
    reader_ops: dict[str, EmbeddedOps] = {}
    reader_lock = threading.Lock()  # one connection a file: one reader at a time (any thread)

    def read_execute(op: Op | StoredClock | LastStoredKey | Sleep) -> Any:
        if isinstance(op, LastStoredKey):
            return readers[0].last_stored_key()
        if not isinstance(op, Op) or op.method not in _READ_METHODS:
            raise RuntimeError(f"read_now runs reads only, not {op!r}")
        if op.collection not in reader_ops:
            reader = readers[file_of(op.collection)]
            reader_ops[op.collection] = EmbeddedOps(reader.collection(op.collection))
        return getattr(reader_ops[op.collection], op.method)(*op.args, **op.kwargs)

    def read_now(work: Work[Any]) -> Any:
        with reader_lock:
            return drive(work, read_execute)

    database._read_now = read_now

    def close() -> None:
        for store in readers + stores:
            thread.call(store.close)
        thread.shutdown()

    database._close_hooks.append(close)
    return database
