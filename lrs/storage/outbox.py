"""The outbox (design notes 1.3): work that stored statements still owe, kept in the database.

A statement batch that commits also writes one entry per consumer, in the same unit of work:
`derive` (progress derivation) and `forward` (fan-out to federation destinations). Each entry
names the batch's statement ids. A consumer deletes its entry once the work is done, so an
entry that stays is work a crash, a lost broker message or an outage left behind, which the
sweeps find again. One small document per batch and consumer, instead of a marker on every
statement that had to be rewritten (with its index entries) once the work was done.

On the embedded store the entries commit with the statements (one transaction); on MongoDB
they are written by the batch protocol after the statements are visible, and the recovery of a
batch whose writer died writes them too (`lrs.storage.statement_writes`), so an acknowledged
statement always has its entries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from lrs.storage.database import Collection, Database
from lrs.storage.unit import Op, insert_many

Kind = Literal["derive", "forward", "resummarize"]
# Written with every batch; "resummarize" entries are written by the derivation when a
# discovered module grew (lrs.progress.deriver), one per module.
KINDS: tuple[Kind, ...] = ("derive", "forward")
COLLECTION = "outbox"


@dataclass
class Owed:
    """Work owed for statements of one store, and the outbox entries that say so (deleted once
    the work is done)."""

    store: str
    ids: list[str]
    entries: list[str] = field(default_factory=list)
    # Handed over by a sweep of the outbox (which hands over all it finds at once), not by the
    # request that stored them.
    swept: bool = False


def entry(token: str, kind: Kind, store: str, ids: list[str], stored_key: int) -> dict[str, Any]:
    """One consumer's entry for a committed batch; its id derives from the batch's `token`, so
    writing it twice (a recovery) adds nothing."""
    return {
        "_id": f"{token}:{kind}",
        "kind": kind,
        "store": store,
        "ids": ids,
        "count": len(ids),
        "stored_key": stored_key,
    }


def entries(
    token: str, store: str, ids: list[str], stored_key: int, kinds: Iterable[Kind] = KINDS
) -> list[dict[str, Any]]:
    return [entry(token, kind, store, ids, stored_key) for kind in kinds]


def add(
    token: str, store: str, ids: list[str], stored_key: int, kinds: Iterable[Kind] = KINDS
) -> Op:
    """The operation that writes a batch's entries (inside the batch's unit of work), one per
    consumer that is owed work (every consumer unless told otherwise)."""
    return insert_many(COLLECTION, entries(token, store, ids, stored_key, kinds))


class Outbox:
    def __init__(self, database: Database) -> None:
        self.entries: Collection = database[COLLECTION]

    async def ensure_indexes(self) -> None:
        await self.entries.create_index([("kind", 1), ("stored_key", 1), ("_id", 1)])

    async def pending(
        self,
        kind: Kind,
        *,
        older_than: int | None = None,
        limit: int = 1000,
        after: tuple[int, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Entries still to do, oldest first; `after` is the (stored_key, _id) of the last one
        of the previous page."""
        clauses: list[dict[str, Any]] = [{"kind": kind}]
        if older_than is not None:
            clauses.append({"stored_key": {"$lt": older_than}})
        if after is not None:
            key, last = after
            clauses.append({"stored_key": {"$gte": key}})
            clauses.append(
                {"$or": [{"stored_key": {"$gt": key}}, {"stored_key": key, "_id": {"$gt": last}}]}
            )
        return await self.entries.find(
            {"$and": clauses}, sort=[("stored_key", 1), ("_id", 1)], limit=limit
        )

    async def still_owed(self, entry_ids: list[str]) -> list[str]:
        """Those of these entries that are still there (not done by someone else meanwhile)."""
        if not entry_ids:
            return []
        docs = await self.entries.find(
            {"_id": {"$in": sorted(set(entry_ids))}}, projection={"_id": 1}
        )
        return [doc["_id"] for doc in docs]

    async def oldest_of_store(self, kind: Kind, store: str, limit: int) -> list[dict[str, Any]]:
        """The store's oldest entries of one kind (at most `limit`)."""
        return await self.entries.find(
            {"kind": kind, "store": store}, sort=[("stored_key", 1), ("_id", 1)], limit=limit
        )

    async def done(self, entry_ids: list[str]) -> None:
        if entry_ids:
            await self.entries.delete_many({"_id": {"$in": sorted(set(entry_ids))}})

    async def owed(self, kind: Kind, store: str, ids: list[str]) -> set[str]:
        """Those of `ids` whose work of this kind is still owed (tests, tooling: this reads
        every entry of the kind)."""
        wanted = set(ids)
        docs = await self.entries.find({"kind": kind}, projection={"store": 1, "ids": 1})
        return {i for doc in docs if doc["store"] == store for i in doc["ids"] if i in wanted}

    async def backlog(self, kind: Kind) -> tuple[int, int | None]:
        """(statements waiting, stored key of the oldest) for one consumer."""
        docs = await self.entries.find(
            {"kind": kind}, projection={"count": 1, "stored_key": 1}, sort=[("stored_key", 1)]
        )
        waiting = sum(int(doc.get("count", 0)) for doc in docs)
        return waiting, (docs[0]["stored_key"] if docs else None)

    async def entry_count(self, kind: Kind) -> int:
        """How many entries of one kind are waiting (for "resummarize": discovered modules
        whose learners' records still show an item count from before the module grew)."""
        return await self.entries.count({"kind": kind})
