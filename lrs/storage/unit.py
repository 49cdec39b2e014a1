"""Units of work: storage logic written once, run by each back end its own way.

A unit of work is a generator that yields storage operations (`Op`) and receives their
results, e.g. `docs = yield find("statements", {...})`; its return value is the unit's result.
It never touches a driver itself, so the same logic runs:

- on the embedded store as ONE job on the store's thread, inside one SQLite transaction
  (grouped with the other writes queued at that moment, see `lrs.storage.database`): atomic,
  and with no thread hand-over between its steps;
- on MongoDB (and the in-memory double) step by step on the event loop, each operation awaited;
  there it is not atomic, so a unit that must be all-or-nothing says how it gets there without
  transactions (it is told which case it is in: `Context.atomic`).

An operation's result, and the exception it raises, are the same on every back end: those of
the `Collection` methods in `lrs.storage.database` (e.g. `insert_many` raises `DuplicateKeys`).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Op:
    """One call of a `Collection` method on the named collection."""

    collection: str
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredClock:
    """Asks for the `stored` key of a statement batch written by this unit: microseconds,
    strictly increasing. On the embedded store it is taken inside the write transaction, so
    keys grow in commit order across processes; elsewhere it is the process's clock."""


@dataclass(frozen=True, slots=True)
class LastStoredKey:
    """Asks for the largest stored key of a committed batch (embedded store only: there, every
    statement at or below it is visible to any read that starts afterwards)."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait a moment (a unit that waits for another writer; never inside a transaction)."""

    seconds: float


Work = Generator["Op | StoredClock | LastStoredKey | Sleep", Any, T]


@dataclass(frozen=True)
class Context:
    """What a unit of work may rely on: `atomic` means it runs in one transaction (embedded),
    so a failure leaves nothing of it behind and no other writer interleaves."""

    atomic: bool


def find(
    collection: str,
    filter: Mapping[str, Any],
    *,
    projection: Mapping[str, Any] | None = None,
    sort: list[tuple[str, int]] | None = None,
    limit: int = 0,
) -> Op:
    return Op(
        collection, "find", (filter,), {"projection": projection, "sort": sort, "limit": limit}
    )


def find_one(
    collection: str, filter: Mapping[str, Any], *, projection: Mapping[str, Any] | None = None
) -> Op:
    return Op(collection, "find_one", (filter,), {"projection": projection})


def insert_many(collection: str, docs: list[dict[str, Any]]) -> Op:
    return Op(collection, "insert_many", (docs,))


def insert_one(collection: str, doc: dict[str, Any]) -> Op:
    return Op(collection, "insert_one", (doc,))


def update_one(
    collection: str, filter: Mapping[str, Any], update: Mapping[str, Any], *, upsert: bool = False
) -> Op:
    return Op(collection, "update_one", (filter, update), {"upsert": upsert})


def update_many(collection: str, filter: Mapping[str, Any], update: Mapping[str, Any]) -> Op:
    return Op(collection, "update_many", (filter, update))


def find_one_and_update(
    collection: str, filter: Mapping[str, Any], update: Mapping[str, Any], *, upsert: bool = False
) -> Op:
    return Op(collection, "find_one_and_update", (filter, update), {"upsert": upsert})


def delete_many(collection: str, filter: Mapping[str, Any]) -> Op:
    return Op(collection, "delete_many", (filter,))


def count(collection: str, filter: Mapping[str, Any]) -> Op:
    return Op(collection, "count", (filter,))


def drive(work: Work[T], execute: Any) -> T:
    """Run a unit of work synchronously, `execute(op)` answering each operation (the embedded
    store's thread)."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = work.throw(error) if error is not None else work.send(result)
        except StopIteration as stop:
            return stop.value
        error = None
        try:
            result = execute(op)
        except Exception as exc:  # handed to the unit, which may handle it
            result, error = None, exc


async def drive_async(work: Work[T], execute: Any) -> T:
    """Run a unit of work on the event loop, awaiting `execute(op)` for each operation."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = work.throw(error) if error is not None else work.send(result)
        except StopIteration as stop:
            return stop.value
        error = None
        try:
            result = await execute(op)
        except Exception as exc:
            result, error = None, exc
