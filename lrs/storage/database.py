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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from lrs.config import Settings

log = logging.getLogger("lrs.storage")
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
        self, keys: Sort, *, unique: bool = False, name: str | None = None
    ) -> None:
        options: dict[str, Any] = {"unique": unique}
        if name:
            options["name"] = name
        await self._raw.create_index(list(keys), **options)


class EmbeddedCollectionAdapter(Collection):
    """The same interface over the embedded store, every call on the store's own thread."""

    def __init__(self, raw: Any, run: Callable[..., Any]) -> None:
        super().__init__(raw)
        self._run = run

    async def insert_many(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        refused = await self._run(self._raw.insert_many, docs)
        if refused:
            raise DuplicateKeys(refused)

    async def insert_one(self, doc: dict[str, Any]) -> None:
        if await self._run(self._raw.insert_many, [doc]):
            raise DuplicateKeys([0])

    async def find(
        self,
        filter: Filter,
        *,
        projection: Mapping[str, Any] | None = None,
        sort: Sort | None = None,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        return await self._run(self._raw.find, filter, projection, sort, limit)

    async def find_one(
        self, filter: Filter, *, projection: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        return await self._run(self._raw.find_one, filter, projection)

    async def update_one(
        self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False
    ) -> int:
        matched, after = await self._run(self._raw.update, filter, update, upsert=upsert)
        return matched + (1 if upsert and not matched and after is not None else 0)

    async def update_many(self, filter: Filter, update: Mapping[str, Any]) -> int:
        matched, _ = await self._run(self._raw.update, filter, update, many=True)
        return matched

    async def find_one_and_update(
        self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False
    ) -> dict[str, Any] | None:
        _, after = await self._run(self._raw.update, filter, update, upsert=upsert)
        return after

    async def replace_one(
        self, filter: Filter, doc: Mapping[str, Any], *, upsert: bool = False
    ) -> int:
        matched, after = await self._run(self._raw.update, filter, dict(doc), upsert=upsert)
        return matched + (1 if upsert and not matched and after is not None else 0)

    async def delete_many(self, filter: Filter) -> int:
        return await self._run(self._raw.delete_many, filter)

    async def count(self, filter: Filter) -> int:
        return await self._run(self._raw.count, filter)

    async def distinct(self, key: str, filter: Filter) -> list[Any]:
        return await self._run(self._raw.distinct, key, filter)

    async def create_index(
        self, keys: Sort, *, unique: bool = False, name: str | None = None
    ) -> None:
        await self._run(self._raw.create_index, list(keys), unique, name)


def _duplicates_or_raise(exc: BulkWriteError) -> Exception:
    errors = exc.details.get("writeErrors", [])
    if errors and all(error.get("code") == 11000 for error in errors):
        return DuplicateKeys(sorted(error["index"] for error in errors))
    return exc


class Database:
    """A named database on one of the back ends; hands out `Collection`s."""

    def __init__(self, kind: str, collection_factory: Callable[[str], Collection]) -> None:
        self.kind = kind
        self._factory = collection_factory
        self._collections: dict[str, Collection] = {}
        self._close_hooks: list[Callable[[], Any]] = []

    def __getitem__(self, name: str) -> Collection:
        if name not in self._collections:
            self._collections[name] = self._factory(name)
        return self._collections[name]

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
    return open_embedded(settings.data_dir, settings.database)


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


# Work on the embedded store's one thread comes in two lanes. Progress derivation marks its
# calls urgent (`urgent_storage_calls`): in one lane with the requests, each of its many small
# reads and writes would wait behind every request queued before it, and progress would stop
# being live exactly when learners are most active. Urgent calls go first, but at most
# `_URGENT_STREAK` in a row while requests wait, so a derivation pass cannot starve requests.
_URGENT_STREAK = 4
_urgent: contextvars.ContextVar[bool] = contextvars.ContextVar("lrs_storage_urgent", default=False)


def urgent_storage_calls() -> None:
    """From now on, in the current task, embedded-store calls take the urgent lane."""
    _urgent.set(True)


class _DedicatedThread:
    """A single worker thread that owns the embedded store's connection for its whole life."""

    def __init__(self) -> None:
        self._lanes: tuple[collections.deque[Any], collections.deque[Any]] = (
            collections.deque(),  # urgent
            collections.deque(),  # normal
        )
        self._ready = threading.Condition()
        self._streak = 0
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="lrs-embedded", daemon=True)
        self._thread.start()

    def _next(self) -> Any:
        with self._ready:
            while True:
                urgent, normal = self._lanes
                if urgent and (self._streak < _URGENT_STREAK or not normal):
                    self._streak += 1
                    return urgent.popleft()
                if normal:
                    self._streak = 0
                    return normal.popleft()
                if self._closing:
                    return None
                self._ready.wait()

    def _work(self) -> None:
        while (job := self._next()) is not None:
            job()

    def _submit(self, urgent: bool, fn: Callable[..., Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        with self._ready:
            self._lanes[0 if urgent else 1].append(job)
            self._ready.notify()
        return future

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        future = self._submit(_urgent.get(), lambda: fn(*args, **kwargs))
        return await asyncio.wrap_future(future)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._submit(False, lambda: fn(*args, **kwargs)).result()

    def shutdown(self) -> None:
        with self._ready:  # the thread finishes what is queued, then stops
            self._closing = True
            self._ready.notify()
        self._thread.join()


def open_embedded(data_dir: Any, name: str) -> Database:
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
    store = thread.call(EmbeddedStore, str(file))
    database = Database(
        "embedded",
        lambda collection: EmbeddedCollectionAdapter(
            thread.call(store.collection, collection), thread.run
        ),
    )

    def close() -> None:
        thread.call(store.close)
        thread.shutdown()

    database._close_hooks.append(close)
    return database
