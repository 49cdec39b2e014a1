"""Statement storage: queries, and the entry points of the write path.

How a statement is kept: `lrs.storage.statement_docs`. How a batch is written all-or-nothing:
`lrs.storage.statement_writes`. The work a stored batch still owes (derivation, forwarding):
`lrs.storage.outbox`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from lrs.storage import outbox
from lrs.storage.attachments import AttachmentRepository
from lrs.storage.database import Collection, Database
from lrs.storage.statement_docs import TERM_FIELDS, narrowing_term, statement_text, term, terms
from lrs.storage.statement_writes import (
    BATCH_WRITES,
    BATCHES,
    Committed,
    Equivalence,
    commit_batch,
    draft_documents,
    oldest_batch,
    recover_batches,
)
from lrs.storage.unit import LastStoredKey, Work
from lrs.xapi.jsontext import parse_stored
from lrs.xapi.timestamps import format_micros

# Version of the statement document layout, see `StatementRepository.migrate`: 2 added `terms`,
# 3 moved the outbox markers (`derived`, `fanned_out`) into the outbox collection, 4 keeps the
# statement text with contextActivities as arrays (`statement_text`).
_SCHEMA = 4
# Indexes earlier versions declared that this one no longer uses (dropped at start-up: every
# index costs every write).
_OBSOLETE_INDEXES = (
    [("derived", 1), ("stored_key", 1), ("id", 1)],
    [("fanned_out", 1), ("stored_key", 1)],
    [("store", 1), ("learner", 1), ("related_activities", 1)],
    [("store", 1), ("related_activities", 1), ("learner", 1)],
    [("store", 1), ("related_agents", 1)],
    [("store", 1), ("voided", 1), ("terms", 1), ("stored_key", -1), ("id", -1)],
)


@dataclass(frozen=True)
class StatementQuery:
    agent: str | None = None
    verb: str | None = None
    activity: str | None = None
    registration: str | None = None
    related_agents: bool = False
    related_activities: bool = False
    since: int | None = None  # microseconds, exclusive
    until: int | None = None  # microseconds, inclusive
    ascending: bool = False
    limit: int = 100
    after: tuple[int, str] | None = None  # paging cursor: (stored_key, id) of the last one seen
    authority: str | None = None  # statements/read/mine


@dataclass
class QueryPage:
    texts: list[str]  # each statement's stored JSON text (see `statement_text`)
    next_cursor: tuple[int, str] | None
    last_stored: str | None = None  # the latest `stored` among them

    @functools.cached_property
    def statements(self) -> list[dict[str, Any]]:
        return [parse_stored(text) for text in self.texts]


class StatementRepository:
    def __init__(self, database: Database, write_lease_seconds: float = 30.0) -> None:
        self.database = database
        self.statements: Collection = database["statements"]
        self.attachments: Collection = database["attachments"]
        self.batches: Collection = database[BATCHES]
        self.outbox = outbox.Outbox(database)
        self.meta: Collection = database["meta"]
        self.write_lease_micros = int(write_lease_seconds * 1e6)

    async def ensure_indexes(self) -> None:
        s = self.statements
        await s.create_index([("store", 1), ("id", 1)], unique=True, name="statement_id")
        await s.create_index([("store", 1), ("voided", 1), ("stored_key", -1), ("id", -1)])
        # Filtered GETs (and the derivation's reads, and erasure): one multikey index over every
        # filterable value of a statement and of the statements it references; the exact
        # filter is applied on top.
        # (`voided` is left to the filter: voided statements are few.)
        await s.create_index([("store", 1), ("terms", 1), ("stored_key", -1), ("id", -1)])
        await s.create_index([("store", 1), ("authority_key", 1), ("stored_key", -1)])
        # StatementRefs only (their fields are left out of other statements).
        await s.create_index([("store", 1), ("ref_target", 1)], partial="ref_target")
        await s.create_index([("store", 1), ("ref_chain_ids", 1)], partial="ref_chain_ids")
        await s.create_index([("store", 1), ("voids", 1)], partial="voids")
        for keys in _OBSOLETE_INDEXES:
            await s.drop_index(keys)
        await self.attachments.create_index([("store", 1), ("sha2", 1)], unique=True)
        await self.batches.create_index([("stored_key", 1)])
        await self.batches.create_index([("expires", 1)])
        await self.outbox.ensure_indexes()

    async def migrate(self) -> int:
        """Bring statements stored by an earlier version up to the current document schema.
        Returns the number of statements updated; a no-op once done, or on a new store."""
        state = await self.meta.find_one({"_id": "statements"})
        schema = state.get("schema", 0) if state is not None else _SCHEMA
        if state is None and await self.statements.find_one({}, projection={"_id": 1}):
            schema = 0  # statements from before the schema marker existed
        if schema >= _SCHEMA:
            if state is None:
                await self._set_schema()
            return 0
        updated = 0
        last: Any = ObjectId("0" * 24)
        while True:
            # Paged on _id (an ObjectId, indexed on every back end): each page is one seek.
            page = await self.statements.find(
                {"_id": {"$gt": last}},
                projection={
                    "terms": 1,
                    "ref_chain": 1,
                    "store": 1,
                    "id": 1,
                    "stored_key": 1,
                    "derived": 1,
                    "fanned_out": 1,
                    "statement": 1,
                    **{f: 1 for f in TERM_FIELDS},
                },
                sort=[("_id", 1)],
                limit=1000,
            )
            if not page:
                break
            for doc in page:
                if "terms" not in doc:
                    new_terms = terms([doc, *(doc.get("ref_chain") or [])])
                    await self.statements.update_one(
                        {"_id": doc["_id"]}, {"$set": {"terms": new_terms}}
                    )
                    updated += 1
                # Schema 3: work the old markers still owed moves into the outbox (the old
                # fields stay, unread; their indexes are dropped).
                for kind, marker in (("derive", "derived"), ("forward", "fanned_out")):
                    if doc.get(marker) is False:
                        entry = outbox.entry(
                            f"upgrade-{doc['_id']}", kind, doc["store"], [doc["id"]],
                            doc["stored_key"],
                        )  # fmt: skip
                        await self.outbox.entries.replace_one(
                            {"_id": entry["_id"]}, entry, upsert=True
                        )
                        updated += 1
                # Schema 4: the text as the exact format serves it.
                if '"contextActivities"' in doc.get("statement", ""):
                    text = statement_text(parse_stored(doc["statement"]))
                    if text != doc["statement"]:
                        await self.statements.update_one(
                            {"_id": doc["_id"]}, {"$set": {"statement": text}}
                        )
                        updated += 1
            last = page[-1]["_id"]
        await self._set_schema()
        return updated

    async def _set_schema(self) -> None:
        await self.meta.update_one(
            {"_id": "statements"}, {"$set": {"schema": _SCHEMA}}, upsert=True
        )

    # --- reads -----------------------------------------------------------------------------

    async def find_by_ids(self, store: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Storage documents by statement id (voided or not; not those still being written)."""
        wanted = list(ids)
        if not wanted:
            return {}
        docs = await self.statements.find(
            {"store": store, "id": {"$in": wanted}, "voided": {"$in": [False, True]}}
        )
        return {doc["id"]: doc for doc in docs}

    async def get(
        self, store: str, statement_id: str, *, voided: bool, authority: str | None = None
    ) -> dict[str, Any] | None:
        """One statement by id; `voided` selects between statementId and voidedStatementId."""
        filter: dict[str, Any] = {"store": store, "id": statement_id, "voided": voided}
        if authority is not None:
            filter["authority_key"] = authority
        doc = await self.statements.find_one(filter, projection={"statement": 1})
        return parse_stored(doc["statement"]) if doc else None

    async def query(self, store: str, query: StatementQuery) -> QueryPage:
        filter = self._query_filter(store, query)
        direction = 1 if query.ascending else -1
        docs = await self.statements.find(
            filter,
            projection={"statement": 1, "stored_key": 1, "id": 1},
            sort=[("stored_key", direction), ("id", direction)],
            limit=query.limit + 1,
        )
        more = len(docs) > query.limit
        docs = docs[: query.limit]
        cursor = (docs[-1]["stored_key"], docs[-1]["id"]) if more and docs else None
        # A statement's `stored` is its batch's key, formatted (lrs.storage.statement_writes).
        last = format_micros(max(doc["stored_key"] for doc in docs)) if docs else None
        return QueryPage([doc["statement"] for doc in docs], cursor, last)

    @staticmethod
    def _query_filter(store: str, query: StatementQuery) -> dict[str, Any]:
        match: dict[str, Any] = {}
        wanted: list[str] = []
        if query.agent is not None:
            field = "related_agents" if query.related_agents else "agents"
            match[field] = query.agent
            wanted.append(narrowing_term(field, query.agent))
        if query.verb is not None:
            match["verb"] = query.verb
            wanted.append(term("verb", query.verb))
        if query.activity is not None:
            field = "related_activities" if query.related_activities else "activity"
            match[field] = query.activity
            wanted.append(narrowing_term(field, query.activity))
        if query.registration is not None:
            match["registration"] = query.registration.lower()
            wanted.append(term("registration", query.registration.lower()))

        clauses: list[dict[str, Any]] = [{"store": store, "voided": False}]
        # Each term narrows candidates through the index (the store's planner picks the most
        # selective); the $or below is the exact condition.
        clauses.extend({"terms": t} for t in wanted)
        if match:
            # A statement that references a matching statement (StatementRef) matches too.
            clauses.append({"$or": [match, {"ref_chain": {"$elemMatch": match}}]})
        if query.authority is not None:
            clauses.append({"authority_key": query.authority})
        stored: dict[str, int] = {}
        if query.since is not None:
            stored["$gt"] = query.since
        if query.until is not None:
            stored["$lte"] = query.until
        if stored:
            clauses.append({"stored_key": stored})
        if query.after is not None:
            key, last_id = query.after
            op = "$gt" if query.ascending else "$lt"
            # The plain bound lets an index seek to the cursor; the $or is the exact position.
            clauses.append({"stored_key": {op + "e": key}})
            clauses.append(
                {"$or": [{"stored_key": {op: key}}, {"stored_key": key, "id": {op: last_id}}]}
            )
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    async def consistent_through(self) -> int:
        """X-Experience-API-Consistent-Through, in microseconds: every statement stored at or
        before it is visible to any read that starts after this call, whichever process wrote
        it (so take it before the read it goes with). Embedded: the key of the last batch
        committed (keys are taken in commit order under the write lock). Elsewhere: now, or
        just below the oldest batch still being written (every process registers its batches
        in the database)."""
        # Read at once (Database.read_now), not behind the queries and writes queued on the
        # store: a GET takes it before its query, which needs nothing more than that order.
        if self.database.context.atomic:
            return await self.database.read_now(_last_stored_key())
        now = time.time_ns() // 1000
        oldest = await self.database.read_now(oldest_batch())
        return now if oldest is None else min(now, oldest - 1)

    def consistent_through_after(self, committed: Committed) -> int | None:
        """A Consistent-Through value known without another read once `committed` is: on the
        embedded store its own stored key (keys are taken in commit order under the write lock,
        so every smaller key committed before it, and it commits with the batch). None
        elsewhere, where earlier batches may still be in flight (`consistent_through`)."""
        return committed.stored_key if self.database.context.atomic else None

    async def get_attachments(self, store: str, sha2s: Iterable[str]) -> list[dict[str, Any]]:
        return await AttachmentRepository(self.attachments).get_many(store, sha2s)

    # --- writes ----------------------------------------------------------------------------

    async def insert_batch(
        self,
        store: str,
        statements: list[dict[str, Any]],
        equivalent: Equivalence,
        attachments: Iterable[tuple[str, str, bytes]] = (),
    ) -> Committed:
        """Store a validated batch all-or-nothing (lrs.storage.statement_writes): statements
        whose id exists with equivalent content are skipped; one whose id exists with different
        content raises StatementConflict and nothing of the batch is stored. The attachments go
        first: content-addressed, so a batch that then fails leaves nothing visible, and its
        retry finds them there."""
        await self._store_attachments(store, attachments)
        # Drafted here, before the write: the embedded store's writers share one lock.
        drafts = draft_documents(statements)
        return await self.database.run(
            commit_batch(
                self.database.context,
                store,
                statements,
                equivalent,
                self.write_lease_micros,
                drafts,
            ),
            writes=BATCH_WRITES,
        )

    async def recover_batches(self) -> int:
        """Finish or abort batches whose writer died (MongoDB protocol; nothing to do on the
        embedded store, where a batch is one transaction)."""
        if self.database.context.atomic:
            return 0
        return await self.database.run(recover_batches(time.time_ns() // 1000))

    async def _store_attachments(
        self, store: str, attachments: Iterable[tuple[str, str, bytes]]
    ) -> None:
        repository = AttachmentRepository(self.attachments)
        for sha2, content_type, data in attachments:
            await repository.put(store, sha2, content_type, data)

    # --- progress derivation ------------------------------------------------------------------

    async def learner_statements(
        self, store: str, learner: str, activity_ids: list[str]
    ) -> list[dict[str, Any]]:
        """Every visible statement of a learner that relates to any of the activities."""
        docs = await self.statements.find(
            {
                "store": store,
                "voided": False,
                "terms": narrowing_term("agents", learner),
                "learner": learner,
                "related_activities": {"$in": activity_ids},
            },
            projection={"statement": 1},
        )
        return [parse_stored(doc["statement"]) for doc in docs]

    async def statements_by_learner(
        self, store: str, activity_ids: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """`learner_statements` for every learner at once: one read for a whole module."""
        docs = await self.statements.find(
            {
                "store": store,
                "voided": False,
                "terms": {"$in": [term("related_activities", a) for a in activity_ids]},
                "related_activities": {"$in": activity_ids},
            },
            projection={"statement": 1, "learner": 1},
        )
        found: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            if doc.get("learner"):
                found.setdefault(doc["learner"], []).append(parse_stored(doc["statement"]))
        return found

    async def raw_statements(self, store: str, ids: list[str]) -> list[dict[str, Any]]:
        """Visible statements by id with their storage flags: (statement, voided, learner)."""
        return await self.statements.find(
            {"store": store, "id": {"$in": ids}, "voided": {"$in": [False, True]}},
            projection={"statement": 1, "voided": 1, "learner": 1, "voids": 1, "id": 1},
        )

    # --- federation (lrs.federation.forwarding) -------------------------------------------------

    async def routing_fields(self, store: str, ids: list[str]) -> list[dict[str, Any]]:
        """What a destination filter looks at, for statements by id (oldest first)."""
        return await self.statements.find(
            {"store": store, "id": {"$in": ids}, "voided": {"$in": [False, True]}},
            projection={
                "id": 1,
                "stored_key": 1,
                "verb": 1,
                "activity": 1,
                "related_activities": 1,
                "registration": 1,
                "voids": 1,
            },
            sort=[("stored_key", 1), ("id", 1)],
        )


def _last_stored_key() -> Work[int]:
    key = yield LastStoredKey()
    return int(key)
