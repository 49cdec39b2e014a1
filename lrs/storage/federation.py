"""Storage for federation: destinations, their delivery rows and dead letters; sources and the
errors met while pulling from them.

Delivery state lives here, never only in a broker, so a dead worker, a restarted Redis or a peer
that is down for hours loses nothing:

- `deliveries`: one row per (destination, group of statements) still to deliver, with its
  attempts and the time of its next attempt. A group is what one fan-out produced (at most the
  destination's batch size), so the embedded store, whose indexes serve equality only, reads a
  few hundred rows to find the oldest due work instead of one row per statement. The row's `_id`
  is derived from the destination and the statement ids, so repeating the same fan-out (a task
  redelivered after a worker died) inserts nothing twice.
- `dead_letters`: one row per (destination, statement) that will not be retried without an
  operator's replay, with the peer's answer.

Destinations and sources carry a lease (`lease_until`, `lease_owner`): one sender per
destination at a time keeps deliveries in `stored` order and never sends one batch twice at
once; a dead worker's lease simply expires.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any

from lrs.storage.database import Collection, Database, DuplicateKeys
from lrs.storage.unit import Work, find

DESTINATIONS = "destinations"


def now_micros() -> int:
    return time.time_ns() // 1000


def group_id(destination: str, statement_ids: Iterable[str], tag: str = "") -> str:
    digest = hashlib.sha1("\n".join(statement_ids).encode()).hexdigest()[:24]
    return f"{destination}:{tag}{digest}"


class _Leases:
    """A lease on a document of `collection`: whoever holds it is the only one working on it."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    async def acquire(
        self, doc_id: str, owner: str, seconds: float, extra: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        now = now_micros()
        filter: dict[str, Any] = {"_id": doc_id, "lease_until": {"$lt": now}, **(extra or {})}
        return await self.collection.find_one_and_update(
            filter,
            {"$set": {"lease_until": now + int(seconds * 1e6), "lease_owner": owner}},
        )

    async def renew(
        self, doc_id: str, owner: str, seconds: float, extra: dict[str, Any] | None = None
    ) -> bool:
        """Extend a lease still held (and, with `extra`, on a document still matching it)."""
        until = now_micros() + int(seconds * 1e6)
        matched = await self.collection.update_one(
            {"_id": doc_id, "lease_owner": owner, **(extra or {})},
            {"$set": {"lease_until": until}},
        )
        return matched > 0

    async def release(self, doc_id: str, owner: str) -> None:
        await self.collection.update_one(
            {"_id": doc_id, "lease_owner": owner},
            {"$set": {"lease_until": 0, "lease_owner": None}},
        )


def has_destinations_work(store: str) -> Work[bool]:
    """Whether the store has a destination, enabled or not (a step of a unit of work)."""
    found = yield find(DESTINATIONS, {"store": store}, projection={"_id": 1}, limit=1)
    return bool(found)


class DestinationRepository:
    def __init__(self, database: Database) -> None:
        self.collection: Collection = database[DESTINATIONS]
        self.leases = _Leases(self.collection)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("store", 1), ("created_key", 1)])

    async def create(self, doc: dict[str, Any]) -> None:
        await self.collection.insert_one(doc)

    async def get(self, store: str, destination_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": destination_id, "store": store})

    async def list(self, store: str) -> list[dict[str, Any]]:
        return await self.collection.find({"store": store}, sort=[("created_key", 1)])

    async def of_store(self, store: str) -> list[dict[str, Any]]:
        """Every destination of a store, enabled or not (a disabled one still queues)."""
        return await self.collection.find({"store": store})

    async def all(self) -> list[dict[str, Any]]:
        return await self.collection.find({}, sort=[("created_key", 1)])

    async def not_caught_up(self, created_before: int) -> list[dict[str, Any]]:
        """Destinations whose creation did not finish queueing the statements stored while they
        were being saved (the process died in between): lrs.federation.Forwarder.catch_up."""
        return await self.collection.find(
            {"caught_up": False, "created_key": {"$lt": created_before}}
        )

    async def update(
        self, store: str, destination_id: str, fields: dict[str, Any]
    ) -> dict[str, Any] | None:
        return await self.collection.find_one_and_update(
            {"_id": destination_id, "store": store}, {"$set": fields}
        )

    async def delete(self, store: str, destination_id: str) -> bool:
        return await self.collection.delete_many({"_id": destination_id, "store": store}) > 0

    async def record(
        self,
        destination_id: str,
        *,
        delivered: int = 0,
        failed_attempts: int = 0,
        dead: int = 0,
        fields: dict[str, Any] | None = None,
    ) -> bool:
        """Counters and the last outcome, for the lag report. False: no such destination
        (deleted meanwhile)."""
        update: dict[str, Any] = {
            "$inc": {"delivered": delivered, "retries": failed_attempts, "dead_total": dead}
        }
        if fields:
            update["$set"] = fields
        return await self.collection.update_one({"_id": destination_id}, update) > 0


class DeliveryRepository:
    def __init__(self, database: Database) -> None:
        self.deliveries: Collection = database["deliveries"]
        self.dead: Collection = database["dead_letters"]

    async def ensure_indexes(self) -> None:
        await self.deliveries.create_index([("destination", 1), ("stored_key", 1)])
        await self.deliveries.create_index([("destination", 1), ("next_attempt_key", 1)])
        await self.dead.create_index([("destination", 1), ("stored_key", 1)])

    # --- pending groups ----------------------------------------------------------------------

    async def add(self, rows: list[dict[str, Any]]) -> int:
        """Insert delivery groups; those already present (a repeated fan-out) are skipped."""
        try:
            await self.deliveries.insert_many(rows)
        except DuplicateKeys as exc:
            return len(rows) - len(exc.indexes)
        return len(rows)

    async def due(self, destination: str, now: int, limit: int) -> list[dict[str, Any]]:
        """The oldest groups (by `stored`) whose next attempt is due."""
        return await self.deliveries.find(
            {"destination": destination, "next_attempt_key": {"$lte": now}},
            sort=[("stored_key", 1), ("seq", 1), ("_id", 1)],
            limit=limit,
        )

    async def has_due(self, destination: str, now: int) -> bool:
        found = await self.deliveries.find(
            {"destination": destination, "next_attempt_key": {"$lte": now}},
            projection={"_id": 1},
            limit=1,
        )
        return bool(found)

    async def remove(self, row_ids: list[str]) -> None:
        if row_ids:
            await self.deliveries.delete_many({"_id": {"$in": row_ids}})

    async def reschedule(
        self,
        row_id: str,
        statements: list[str],
        attempts: int,
        next_attempt_key: int,
        error: dict[str, Any] | None,
    ) -> None:
        await self.deliveries.update_one(
            {"_id": row_id},
            {
                "$set": {
                    "statements": statements,
                    "count": len(statements),
                    "attempts": attempts,
                    "next_attempt_key": next_attempt_key,
                    "last_error": error,
                }
            },
        )

    async def make_due(self, destination: str) -> None:
        """Every pending group of the destination is due now (its hold was lifted)."""
        await self.deliveries.update_many(
            {"destination": destination, "next_attempt_key": {"$gt": 0}},
            {"$set": {"next_attempt_key": 0}},
        )

    async def pending(self, destination: str) -> list[dict[str, Any]]:
        return await self.deliveries.find(
            {"destination": destination},
            projection={"count": 1, "stored_key": 1, "next_attempt_key": 1, "attempts": 1},
        )

    # --- dead letters ------------------------------------------------------------------------

    async def bury(self, letters: list[dict[str, Any]]) -> None:
        """Add dead letters; one that is already there (died again after a replay) is replaced."""
        if not letters:
            return
        try:
            await self.dead.insert_many(letters)
        except DuplicateKeys as exc:
            for index in exc.indexes:
                letter = letters[index]
                await self.dead.replace_one({"_id": letter["_id"]}, letter, upsert=True)

    async def dead_letters(
        self, destination: str, limit: int, after: tuple[int, str] | None = None
    ) -> list[dict[str, Any]]:
        filter: dict[str, Any] = {"destination": destination}
        if after is not None:
            key, last = after
            filter["$or"] = [
                {"stored_key": {"$gt": key}},
                {"stored_key": key, "statement": {"$gt": last}},
            ]
        return await self.dead.find(filter, sort=[("stored_key", 1), ("statement", 1)], limit=limit)

    async def dead_for(self, destination: str, statement: str | None) -> list[dict[str, Any]]:
        filter: dict[str, Any] = {"destination": destination}
        if statement is not None:
            filter["statement"] = statement
        return await self.dead.find(filter, sort=[("stored_key", 1), ("statement", 1)])

    async def count_dead(self, destination: str) -> int:
        return await self.dead.count({"destination": destination})

    async def remove_dead(self, letter_ids: list[str]) -> None:
        if letter_ids:
            await self.dead.delete_many({"_id": {"$in": letter_ids}})

    async def drop_destination(self, destination: str) -> None:
        await self.deliveries.delete_many({"destination": destination})
        await self.dead.delete_many({"destination": destination})


class SourceRepository:
    def __init__(self, database: Database) -> None:
        self.collection: Collection = database["sources"]
        self.errors: Collection = database["source_errors"]
        self.leases = _Leases(self.collection)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("store", 1), ("created_key", 1)])
        await self.errors.create_index([("source", 1), ("at_key", 1)])

    async def create(self, doc: dict[str, Any]) -> None:
        await self.collection.insert_one(doc)

    async def get(self, store: str, source_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": source_id, "store": store})

    async def list(self, store: str) -> list[dict[str, Any]]:
        return await self.collection.find({"store": store}, sort=[("created_key", 1)])

    async def due(self, now: int) -> list[dict[str, Any]]:
        return await self.collection.find(
            {"enabled": True, "next_poll_key": {"$lte": now}},
            projection={"_id": 1},
            sort=[("next_poll_key", 1)],
        )

    async def update(
        self, store: str | None, source_id: str, fields: dict[str, Any], inc: dict | None = None
    ) -> dict[str, Any] | None:
        filter: dict[str, Any] = {"_id": source_id}
        if store is not None:
            filter["store"] = store
        update: dict[str, Any] = {"$set": fields}
        if inc:
            update["$inc"] = inc
        return await self.collection.find_one_and_update(filter, update)

    async def request_poll(self, store: str, source_id: str) -> dict[str, Any] | None:
        """Make an enabled source due now; None (and nothing changed) when it is disabled or
        missing. `poll_requests` tells a poll under way that it was asked for again."""
        return await self.collection.find_one_and_update(
            {"_id": source_id, "store": store, "enabled": True},
            {"$set": {"next_poll_key": 0}, "$inc": {"poll_requests": 1}},
        )

    async def advance_checkpoint(
        self, source_id: str, revision: int | None, fields: dict[str, Any], inc: dict[str, int]
    ) -> bool:
        """Move the checkpoint after a stored page, unless the admin API set another one (or
        changed what it refers to) since the poll began: `checkpoint_rev` is no longer the
        `revision` the poll read. The counters count in any case: the page was stored."""
        matched = await self.collection.update_one(
            {"_id": source_id, "checkpoint_rev": revision}, {"$set": fields, "$inc": inc}
        )
        if not matched:
            await self.collection.update_one({"_id": source_id}, {"$inc": inc})
        return matched > 0

    async def finish_poll(
        self,
        source_id: str,
        fields: dict[str, Any],
        next_poll_key: int,
        poll_requests: int | None,
    ) -> None:
        """Record a poll's outcome and when the next one is due, unless a poll was asked for
        while it ran (`poll_requests` moved on): that request keeps the source due now."""
        matched = await self.collection.update_one(
            {"_id": source_id, "poll_requests": poll_requests},
            {"$set": {**fields, "next_poll_key": next_poll_key}},
        )
        if not matched:
            await self.collection.update_one({"_id": source_id}, {"$set": fields})

    async def delete(self, store: str, source_id: str) -> bool:
        deleted = await self.collection.delete_many({"_id": source_id, "store": store})
        if deleted:
            await self.errors.delete_many({"source": source_id})
        return deleted > 0

    async def record_error(
        self, store: str, source_id: str, statement_id: str | None, message: str
    ) -> None:
        """One error row per (source, statement): a conflict seen again on a later poll updates
        its row instead of adding another."""
        key = statement_id or f"page:{now_micros()}"
        await self.errors.update_one(
            {"_id": f"{source_id}:{key}"},
            {
                "$set": {
                    "store": store,
                    "source": source_id,
                    "statement": statement_id,
                    "error": message,
                    "at_key": now_micros(),
                },
                "$inc": {"seen": 1},
            },
            upsert=True,
        )

    async def list_errors(self, source_id: str, limit: int) -> list[dict[str, Any]]:
        return await self.errors.find({"source": source_id}, sort=[("at_key", -1)], limit=limit)
