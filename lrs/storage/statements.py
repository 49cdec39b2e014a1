"""Statement storage: write-time indexing fields, all-or-nothing batches, voiding, queries.

Each statement is kept as its exact JSON text (`statement`) next to the fields the xAPI
queries filter on. Keeping the text avoids MongoDB's restrictions on field names (extension
keys are IRIs with dots, and may start with `$`) and returns statements byte-for-byte as stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from lrs.storage.attachments import AttachmentRepository
from lrs.storage.database import Collection, Database, DuplicateKeys
from lrs.xapi.agents import (
    agent_key,
    object_activity,
    related_activities,
    related_agents,
    statement_agents,
)

VOIDED_VERB = "http://adlnet.gov/expapi/verbs/voided"
_SCHEMA = 2  # version of the statement document layout, see `StatementRepository.migrate`
_MAX_REFERENCE_DEPTH = 16


class StatementConflict(Exception):
    """A statement id already exists with different content."""

    def __init__(self, statement_id: str) -> None:
        super().__init__(f"statement {statement_id} already exists with different content")
        self.statement_id = statement_id


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
    statements: list[dict[str, Any]]
    next_cursor: tuple[int, str] | None


def _reference_target(statement: dict[str, Any]) -> str | None:
    obj = statement.get("object")
    if isinstance(obj, dict) and obj.get("objectType") == "StatementRef":
        target = obj.get("id")
        return target.lower() if isinstance(target, str) else None
    return None


def _match_fields(statement: dict[str, Any]) -> dict[str, Any]:
    registration = (statement.get("context") or {}).get("registration")
    return {
        "agents": statement_agents(statement),
        "related_agents": related_agents(statement),
        "verb": (statement.get("verb") or {}).get("id"),
        "activity": object_activity(statement),
        "related_activities": related_activities(statement),
        "registration": registration.lower() if isinstance(registration, str) else None,
        "learner": learner_key(statement),
    }


def learner_key(statement: dict[str, Any]) -> str | None:
    """The learner whose progress a statement counts for: an Agent actor only. An identified
    Group counts for none of its members, and an anonymous Group's members are not inferred."""
    actor = statement.get("actor")
    if isinstance(actor, dict) and actor.get("objectType", "Agent") == "Agent":
        return agent_key(actor)
    return None


def is_voiding(statement: dict[str, Any]) -> bool:
    return (statement.get("verb") or {}).get("id") == VOIDED_VERB


class StatementRepository:
    def __init__(self, database: Database) -> None:
        self.statements: Collection = database["statements"]
        self.attachments: Collection = database["attachments"]
        self.meta: Collection = database["meta"]

    async def ensure_indexes(self) -> None:
        s = self.statements
        await s.create_index([("store", 1), ("id", 1)], unique=True, name="statement_id")
        await s.create_index([("store", 1), ("voided", 1), ("stored_key", -1), ("id", -1)])
        # Filtered GETs: one multikey index over every filterable value of a statement and of
        # the statements it references; the exact filter is applied on top.
        await s.create_index(
            [("store", 1), ("voided", 1), ("terms", 1), ("stored_key", -1), ("id", -1)]
        )
        await s.create_index([("store", 1), ("authority_key", 1), ("stored_key", -1)])
        await s.create_index([("store", 1), ("related_agents", 1)])  # learner erasure
        await s.create_index([("store", 1), ("ref_target", 1)])
        await s.create_index([("store", 1), ("ref_chain_ids", 1)])
        await s.create_index([("store", 1), ("voids", 1)])
        await s.create_index([("derived", 1), ("stored_key", 1), ("id", 1)])
        await s.create_index([("fanned_out", 1), ("stored_key", 1)])
        await s.create_index([("store", 1), ("learner", 1), ("related_activities", 1)])
        await s.create_index([("store", 1), ("related_activities", 1), ("learner", 1)])
        await self.attachments.create_index([("store", 1), ("sha2", 1)], unique=True)

    async def migrate(self) -> int:
        """Bring statements stored by an earlier version up to the current document schema
        (schema 2 added `terms`, without which filtered GETs would not find them). Returns the
        number of statements updated; a no-op once done, or on a new store."""
        state = await self.meta.find_one({"_id": "statements"})
        if state is not None and state.get("schema", 0) >= _SCHEMA:
            return 0
        updated = 0
        last: Any = ObjectId("0" * 24)
        while True:
            # Paged on _id (an ObjectId, indexed on every back end): each page is one seek.
            page = await self.statements.find(
                {"_id": {"$gt": last}},
                projection={"terms": 1, "ref_chain": 1, **{f: 1 for f in _TERM_FIELDS}},
                sort=[("_id", 1)],
                limit=1000,
            )
            if not page:
                break
            for doc in page:
                if "terms" not in doc:
                    terms = _terms([doc, *(doc.get("ref_chain") or [])])
                    await self.statements.update_one(
                        {"_id": doc["_id"]}, {"$set": {"terms": terms}}
                    )
                    updated += 1
            last = page[-1]["_id"]
        await self.meta.update_one(
            {"_id": "statements"}, {"$set": {"schema": _SCHEMA}}, upsert=True
        )
        return updated

    # --- reads -----------------------------------------------------------------------------

    async def find_by_ids(self, store: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Raw storage documents by statement id (voided or not)."""
        wanted = list(ids)
        if not wanted:
            return {}
        docs = await self.statements.find({"store": store, "id": {"$in": wanted}})
        return {doc["id"]: doc for doc in docs}

    async def get(
        self, store: str, statement_id: str, *, voided: bool, authority: str | None = None
    ) -> dict[str, Any] | None:
        """One statement by id; `voided` selects between statementId and voidedStatementId."""
        filter: dict[str, Any] = {"store": store, "id": statement_id, "voided": voided}
        if authority is not None:
            filter["authority_key"] = authority
        doc = await self.statements.find_one(filter, projection={"statement": 1})
        return json.loads(doc["statement"]) if doc else None

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
        return QueryPage([json.loads(doc["statement"]) for doc in docs], cursor)

    @staticmethod
    def _query_filter(store: str, query: StatementQuery) -> dict[str, Any]:
        match: dict[str, Any] = {}
        terms: list[str] = []
        if query.agent is not None:
            field = "related_agents" if query.related_agents else "agents"
            match[field] = query.agent
            terms.append(_term(field, query.agent))
        if query.verb is not None:
            match["verb"] = query.verb
            terms.append(_term("verb", query.verb))
        if query.activity is not None:
            field = "related_activities" if query.related_activities else "activity"
            match[field] = query.activity
            terms.append(_term(field, query.activity))
        if query.registration is not None:
            match["registration"] = query.registration.lower()
            terms.append(_term("registration", query.registration.lower()))

        clauses: list[dict[str, Any]] = [{"store": store, "voided": False}]
        # Each term narrows candidates through the index (the store's planner picks the most
        # selective); the $or below is the exact condition.
        clauses.extend({"terms": term} for term in terms)
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

    async def get_attachments(self, store: str, sha2s: Iterable[str]) -> list[dict[str, Any]]:
        return await AttachmentRepository(self.attachments).get_many(store, sha2s)

    # --- writes ----------------------------------------------------------------------------

    async def insert_batch(
        self,
        store: str,
        statements: list[dict[str, Any]],
        stored_key: int,
        equivalent: Any,
        attachments: Iterable[tuple[str, str, bytes]] = (),
    ) -> list[dict[str, Any]]:
        """Store a validated batch (ids, stored, authority already set) all-or-nothing.

        Statements whose id exists with equivalent content are skipped; one whose id exists with
        different content raises StatementConflict and nothing of the batch stays stored.
        Returns the statements that were newly stored.
        """
        # Attachments first (content-addressed, idempotent): a statement is never stored
        # without its attachments, and a retry of a request that failed half way completes it.
        await self._store_attachments(store, attachments)
        existing = await self.find_by_ids(store, (s["id"] for s in statements))
        fresh = self._drop_equivalent(statements, existing, equivalent)
        if not fresh:
            return []

        voided_on_arrival = await self._already_voided(store, [s["id"] for s in fresh])
        chains = await self._chains_for(store, fresh)
        docs = [
            self._document(store, s, stored_key, s["id"] in voided_on_arrival, chains[s["id"]])
            for s in fresh
        ]
        for doc in docs:
            doc["_id"] = ObjectId()
        try:
            await self.statements.insert_many(docs)
        except DuplicateKeys as exc:
            # Another request stored some of these ids between our check and our insert.
            rejected = {docs[i]["id"] for i in exc.indexes}
            inserted = [doc["_id"] for doc in docs if doc["id"] not in rejected]
            racing = await self.find_by_ids(store, rejected)
            try:
                self._drop_equivalent([s for s in fresh if s["id"] in rejected], racing, equivalent)
            except StatementConflict:
                await self.statements.delete_many({"_id": {"$in": inserted}})
                raise
            fresh = [s for s in fresh if s["id"] not in rejected]

        # A voiding statement stored by a concurrent request after our check above found
        # nothing to flag; looking again now that ours are in closes that window.
        late = await self._already_voided(
            store, [s["id"] for s in fresh if s["id"] not in voided_on_arrival]
        )
        if late:
            await self.statements.update_many(
                {"store": store, "id": {"$in": sorted(late)}, "voids": None},
                {"$set": {"voided": True}},
            )
        await self._apply_voiding(store, fresh)
        await self._refresh_referrers(store, [s["id"] for s in fresh])
        return fresh

    @staticmethod
    def _drop_equivalent(
        statements: list[dict[str, Any]], existing: dict[str, dict[str, Any]], equivalent: Any
    ) -> list[dict[str, Any]]:
        fresh = []
        for statement in statements:
            doc = existing.get(statement["id"])
            if doc is None:
                fresh.append(statement)
            elif not equivalent(json.loads(doc["statement"]), statement):
                raise StatementConflict(statement["id"])
        return fresh

    @staticmethod
    def _document(
        store: str,
        statement: dict[str, Any],
        stored_key: int,
        voided: bool,
        chain: list[dict[str, Any]],
    ) -> dict[str, Any]:
        target = _reference_target(statement)
        fields = _match_fields(statement)
        return {
            "store": store,
            "id": statement["id"],
            "statement": json.dumps(statement, separators=(",", ":"), ensure_ascii=False),
            "stored_key": stored_key,
            "voided": voided,
            "voids": target if is_voiding(statement) else None,
            "ref_target": target,
            "ref_chain": chain,
            "ref_chain_ids": [link["id"] for link in chain],
            "terms": _terms([fields, *chain]),
            "authority_key": agent_key(statement.get("authority")),
            "derived": False,
            # The federation outbox: fanned out to the store's destinations (lrs.federation).
            "fanned_out": False,
            **fields,
        }

    async def _already_voided(self, store: str, ids: list[str]) -> set[str]:
        voiders = await self.statements.find(
            {"store": store, "voids": {"$in": ids}, "voided": False}, projection={"voids": 1}
        )
        return {doc["voids"] for doc in voiders}

    async def _store_attachments(
        self, store: str, attachments: Iterable[tuple[str, str, bytes]]
    ) -> None:
        repository = AttachmentRepository(self.attachments)
        for sha2, content_type, data in attachments:
            await repository.put(store, sha2, content_type, data)

    async def _apply_voiding(self, store: str, fresh: list[dict[str, Any]]) -> None:
        targets = [_reference_target(s) for s in fresh if is_voiding(s)]
        targets = [t for t in targets if t]
        if not targets:
            return
        # A voiding statement is never voided itself (the API rejects such requests up front).
        await self.statements.update_many(
            {"store": store, "id": {"$in": targets}, "voids": None}, {"$set": {"voided": True}}
        )
        await self._refresh_referrers(store, targets)

    # --- StatementRef chains ----------------------------------------------------------------
    # A statement whose object is a StatementRef carries summaries of the statements it
    # references (transitively), so "statements referencing a match" is one indexed query.

    async def _chain(self, store: str, target: str | None) -> list[dict[str, Any]]:
        # A voided target stays in the chain: statements targeting it, the voiding statement
        # included, still match filters through it (Communication 2.1.4.s1.b2); the voided
        # statement itself is never returned.
        chain: list[dict[str, Any]] = []
        seen: set[str] = set()
        while target and target not in seen and len(chain) < _MAX_REFERENCE_DEPTH:
            seen.add(target)
            doc = await self.statements.find_one({"store": store, "id": target})
            if doc is None:
                break
            chain.append({"id": doc["id"], **{k: doc[k] for k in _SUMMARY_FIELDS}})
            target = doc["ref_target"]
        return chain

    async def _chains_for(
        self, store: str, statements: list[dict[str, Any]]
    ) -> dict[str, list[dict[str, Any]]]:
        return {s["id"]: await self._chain(store, _reference_target(s)) for s in statements}

    async def _refresh_referrers(self, store: str, changed_ids: list[str]) -> None:
        """Recompute the chains of statements that reference (directly or not) changed ones."""
        if not changed_ids:
            return
        # Two simple indexed queries rather than one $or: the embedded store answers an $or
        # (or a path into an array of subdocuments) by scanning every statement.
        referrers: dict[Any, dict[str, Any]] = {}
        for field in ("ref_target", "ref_chain_ids"):
            for doc in await self.statements.find(
                {"store": store, field: {"$in": changed_ids}},
                projection={"id": 1, "ref_chain_ids": 1, **{name: 1 for name in _SUMMARY_FIELDS}},
            ):
                referrers[doc["_id"]] = doc
        for doc in referrers.values():
            chain = await self._chain(store, doc["ref_target"])
            if [link["id"] for link in chain] == doc.get("ref_chain_ids"):
                # Statements are immutable: the same links summarise the same statements
                # (voiding one changes no chain).
                continue
            await self.statements.update_one(
                {"_id": doc["_id"]},
                {
                    "$set": {
                        "ref_chain": chain,
                        "ref_chain_ids": [link["id"] for link in chain],
                        "terms": _terms([doc, *chain]),
                    }
                },
            )

    # --- progress derivation ------------------------------------------------------------------

    async def learner_statements(
        self, store: str, learner: str, activity_ids: list[str]
    ) -> list[dict[str, Any]]:
        """Every non-voided statement of a learner that relates to any of the activities."""
        docs = await self.statements.find(
            {
                "store": store,
                "learner": learner,
                "voided": False,
                "related_activities": {"$in": activity_ids},
            },
            projection={"statement": 1},
        )
        return [json.loads(doc["statement"]) for doc in docs]

    async def statements_by_learner(
        self, store: str, activity_ids: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """`learner_statements` for every learner at once: one read for a whole module."""
        docs = await self.statements.find(
            {"store": store, "voided": False, "related_activities": {"$in": activity_ids}},
            projection={"statement": 1, "learner": 1},
        )
        found: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            if doc.get("learner"):
                found.setdefault(doc["learner"], []).append(json.loads(doc["statement"]))
        return found

    async def raw_statements(self, store: str, ids: list[str]) -> list[dict[str, Any]]:
        """Statements by id with their storage flags: (statement, voided, learner)."""
        docs = await self.statements.find(
            {"store": store, "id": {"$in": ids}},
            projection={"statement": 1, "voided": 1, "learner": 1, "voids": 1, "id": 1},
        )
        return docs

    # --- outbox (design notes section 1) -----------------------------------------------------

    async def mark_derived(self, store: str, ids: list[str]) -> None:
        await self.statements.update_many(
            {"store": store, "id": {"$in": ids}}, {"$set": {"derived": True}}
        )

    async def underived(
        self,
        older_than: int | None = None,
        limit: int = 1000,
        after: tuple[int, str] | None = None,
    ) -> list[dict]:
        """Statements still waiting for derivation, oldest first: (store, id, stored_key);
        `after` is the (stored_key, id) of the last one of the previous page."""
        clauses: list[dict[str, Any]] = [{"derived": False}]
        if older_than is not None:
            clauses.append({"stored_key": {"$lt": older_than}})
        if after is not None:
            key, last_id = after
            clauses.append({"stored_key": {"$gte": key}})
            clauses.append(
                {"$or": [{"stored_key": {"$gt": key}}, {"stored_key": key, "id": {"$gt": last_id}}]}
            )
        return await self.statements.find(
            {"$and": clauses},
            projection={"store": 1, "id": 1, "stored_key": 1},
            sort=[("stored_key", 1), ("id", 1)],
            limit=limit,
        )

    async def count_underived(self) -> int:
        return await self.statements.count({"derived": False})

    # --- federation outbox (lrs.federation.forwarding) ------------------------------------------

    async def routing_fields(self, store: str, ids: list[str]) -> list[dict[str, Any]]:
        """What a destination filter looks at, for statements by id (oldest first)."""
        return await self.statements.find(
            {"store": store, "id": {"$in": ids}},
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

    async def mark_fanned_out(self, store: str, ids: list[str]) -> None:
        await self.statements.update_many(
            {"store": store, "id": {"$in": ids}}, {"$set": {"fanned_out": True}}
        )

    async def unfanned(self, older_than: int | None = None, limit: int = 1000) -> list[dict]:
        """Statements not yet fanned out to destinations, oldest first: (store, id)."""
        filter: dict[str, Any] = {"fanned_out": False}
        if older_than is not None:
            filter["stored_key"] = {"$lt": older_than}
        return await self.statements.find(
            filter, projection={"store": 1, "id": 1}, sort=[("stored_key", 1)], limit=limit
        )


_TERM_FIELDS = (
    "agents",
    "related_agents",
    "verb",
    "activity",
    "related_activities",
    "registration",
)
_SUMMARY_FIELDS = ("ref_target", *_TERM_FIELDS)


def _term(field: str, value: str) -> str:
    return f"{field}:{value}"


def _terms(summaries: list[dict[str, Any]]) -> list[str]:
    """Every filterable value of a statement and of the statements it references, one string
    each, for the `terms` index."""
    found: set[str] = set()
    for summary in summaries:
        for field in _TERM_FIELDS:
            value = summary.get(field)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    found.add(_term(field, item))
    return sorted(found)
