"""The one place that talks to a document store driver.

Three back ends share one small async interface (`Collection`):
- MongoDB through `pymongo.AsyncMongoClient` (production);
- `litemongo`, an embedded SQLite-backed store with a synchronous pymongo-like API, run on one
  dedicated thread because its client refuses use from several threads;
- `mongomock-motor` in memory, for tests and throwaway runs.
Repositories (statements, credentials, documents, ...) use only this interface, so the same
code and the same tests run on all three.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from lrs.config import Settings

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


class ThreadedCollection(Collection):
    """The same interface over a synchronous collection, every call on the database's thread."""

    def __init__(self, raw: Any, run: Callable[..., Any]) -> None:
        super().__init__(raw)
        self._run = run

    async def insert_many(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        try:
            await self._run(self._raw.insert_many, docs, ordered=False)
        except BulkWriteError as exc:
            raise _duplicates_or_raise(exc) from exc

    async def insert_one(self, doc: dict[str, Any]) -> None:
        try:
            await self._run(self._raw.insert_one, doc)
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
        def query() -> list[dict[str, Any]]:
            cursor = self._raw.find(dict(filter), projection)
            if not sort:
                return list(cursor.limit(limit) if limit else cursor)
            # The embedded store sorts with a pure-Python BSON comparison, about 25x slower than
            # Python's own sort on the plain ints and strings our sort keys hold.
            return _sorted(list(cursor), sort, limit)

        return await self._run(query)

    async def find_one(
        self, filter: Filter, *, projection: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        return await self._run(self._raw.find_one, dict(filter), projection)

    async def update_one(
        self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False
    ) -> int:
        result = await self._run(self._raw.update_one, dict(filter), dict(update), upsert=upsert)
        return result.matched_count + (1 if result.upserted_id is not None else 0)

    async def update_many(self, filter: Filter, update: Mapping[str, Any]) -> int:
        result = await self._run(self._raw.update_many, dict(filter), dict(update))
        return result.matched_count

    async def find_one_and_update(
        self, filter: Filter, update: Mapping[str, Any], *, upsert: bool = False
    ) -> dict[str, Any] | None:
        return await self._run(
            self._raw.find_one_and_update,
            dict(filter),
            dict(update),
            upsert=upsert,
            return_document=ReturnDocument.AFTER,
        )

    async def replace_one(
        self, filter: Filter, doc: Mapping[str, Any], *, upsert: bool = False
    ) -> int:
        result = await self._run(self._raw.replace_one, dict(filter), dict(doc), upsert=upsert)
        return result.matched_count + (1 if result.upserted_id is not None else 0)

    async def delete_many(self, filter: Filter) -> int:
        result = await self._run(self._raw.delete_many, dict(filter))
        return result.deleted_count

    async def count(self, filter: Filter) -> int:
        return await self._run(self._raw.count_documents, dict(filter))

    async def distinct(self, key: str, filter: Filter) -> list[Any]:
        return await self._run(self._raw.distinct, key, dict(filter))

    async def create_index(
        self, keys: Sort, *, unique: bool = False, name: str | None = None
    ) -> None:
        options: dict[str, Any] = {"unique": unique}
        if name:
            options["name"] = name
        await self._run(self._raw.create_index, list(keys), **options)


def _sort_value(value: Any) -> tuple[int, Any]:
    # MongoDB's order across the types we sort on: null/missing, numbers, strings.
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (3, value)
    if isinstance(value, int | float):
        return (1, value)
    return (2, str(value))


def _sorted(docs: list[dict[str, Any]], sort: Sort, limit: int) -> list[dict[str, Any]]:
    # Stable sorts from the last key to the first give the compound order.
    for field, direction in reversed(list(sort)):
        docs.sort(key=lambda doc: _sort_value(doc.get(field)), reverse=direction < 0)
    return docs[:limit] if limit else docs


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


class _DedicatedThread:
    """A single worker thread that owns the embedded client for its whole life."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrs-embedded")
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._executor.submit(fn, *args, **kwargs).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def open_embedded(data_dir: Any, name: str) -> Database:
    import pathlib

    import litemongo

    path = pathlib.Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    thread = _DedicatedThread()
    client = thread.call(litemongo.connect, str(path))
    raw_db = thread.call(lambda: client[name])
    database = Database(
        "embedded",
        lambda collection: ThreadedCollection(thread.call(lambda: raw_db[collection]), thread.run),
    )

    def close() -> None:
        thread.call(client.close)
        thread.shutdown()

    database._close_hooks.append(close)
    return database
