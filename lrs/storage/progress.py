"""Storage for the course catalogue and the derived progress records."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from lrs.progress.catalogue import Course, Item, Module
from lrs.storage.database import Collection, Database, DuplicateKeys
from lrs.xapi.timestamps import monotonic_now_micros


def _module_doc(module: Module) -> dict[str, Any]:
    doc = asdict(module)
    doc["items"] = [asdict(item) for item in module.items]
    return doc


def _module_from(doc: dict[str, Any]) -> Module:
    items = tuple(Item(**item) for item in doc["items"])
    return Module(**{**doc, "items": items})


def _course_from(doc: dict[str, Any]) -> Course:
    return Course(
        id=doc["id"],
        title=doc.get("title", ""),
        profile=doc.get("profile", "generic"),
        modules=tuple(_module_from(m) for m in doc["modules"]),
        discovered=doc.get("discovered", False),
        source=doc.get("source", "definition"),
        extra={"definition": doc.get("definition"), "updated_key": doc.get("updated_key", 0)},
    )


class CatalogueRepository:
    """Courses, plus an index from every activity id to the modules it belongs to, so that the
    derivation finds the modules a statement touches with one query."""

    def __init__(self, database: Database) -> None:
        self.courses: Collection = database["courses"]
        self.activities: Collection = database["course_activities"]

    async def ensure_indexes(self) -> None:
        await self.courses.create_index([("store", 1), ("id", 1)], unique=True)
        await self.activities.create_index(
            [("store", 1), ("activity", 1), ("course", 1), ("module", 1)], unique=True
        )
        await self.activities.create_index([("store", 1), ("course", 1)])

    async def put(self, store: str, course: Course, definition: Any = None) -> Course | None:
        """Create or replace a course; returns the previous version, if any."""
        previous = await self.get(store, course.id)
        doc = {
            "store": store,
            "id": course.id,
            "title": course.title,
            "profile": course.profile,
            "source": course.source,
            "discovered": course.discovered,
            "modules": [_module_doc(m) for m in course.modules],
            "definition": definition,
            "updated": datetime.now(UTC).isoformat(),
            "updated_key": monotonic_now_micros(),
            # The outbox marker for catalogue changes: cleared once the course is re-derived.
            "derivation_pending": True,
        }
        await self.courses.replace_one({"store": store, "id": course.id}, doc, upsert=True)
        await self._reindex(store, course)
        return previous

    async def _reindex(self, store: str, course: Course) -> None:
        rows = {
            (activity, module.id) for module in course.modules for activity in module.activity_ids
        }
        await self.activities.delete_many({"store": store, "course": course.id})
        docs = [
            {"store": store, "activity": activity, "course": course.id, "module": module}
            for activity, module in sorted(rows)
        ]
        # A concurrent re-index of the same course may have written the same rows.
        with contextlib.suppress(DuplicateKeys):
            await self.activities.insert_many(docs)

    async def get(self, store: str, course_id: str) -> Course | None:
        doc = await self.courses.find_one({"store": store, "id": course_id})
        return _course_from(doc) if doc else None

    async def list(self, store: str) -> list[Course]:
        docs = await self.courses.find({"store": store}, sort=[("id", 1)])
        return [_course_from(doc) for doc in docs]

    async def mark_derived(self, store: str, course_id: str, updated_key: int) -> None:
        """Clear the marker, unless the course changed again meanwhile."""
        await self.courses.update_one(
            {"store": store, "id": course_id, "updated_key": updated_key},
            {"$set": {"derivation_pending": False}},
        )

    async def pending(self, older_than: int) -> list[tuple[str, str]]:
        docs = await self.courses.find(
            {"derivation_pending": True, "updated_key": {"$lt": older_than}},
            projection={"store": 1, "id": 1},
        )
        return [(doc["store"], doc["id"]) for doc in docs]

    async def delete(self, store: str, course_id: str) -> bool:
        deleted = await self.courses.delete_many({"store": store, "id": course_id})
        await self.activities.delete_many({"store": store, "course": course_id})
        return deleted > 0

    async def modules_for(self, store: str, activity_ids: list[str]) -> list[Module]:
        """Modules that contain any of the activities (as module id or item)."""
        if not activity_ids:
            return []
        rows = await self.activities.find(
            {"store": store, "activity": {"$in": sorted(set(activity_ids))}}
        )
        wanted = {(row["course"], row["module"]) for row in rows}
        modules: list[Module] = []
        for course_id in sorted({course for course, _ in wanted}):
            course = await self.get(store, course_id)
            if course is None:
                continue
            modules += [m for m in course.modules if (course_id, m.id) in wanted]
        return modules

    async def discover(self, store: str, course_id: str, module_id: str, item_id: str) -> bool:
        """Add an item to a discovered module (creating course and module as needed); True if
        the module's content set grew. Defined courses are never changed by discovery."""
        course = await self.get(store, course_id)
        if course is not None and not course.discovered:
            return False
        modules = list(course.modules) if course else []
        module = next((m for m in modules if m.id == module_id), None)
        if module is not None and module.item(item_id):
            return False
        items = (*(module.items if module else ()), Item(item_id, "content", "Completed"))
        updated = Module(course_id, module_id, "", items, "CompletedAndPassed", "generic", True)
        modules = [updated if m.id == module_id else m for m in modules]
        if module is None:
            modules.append(updated)
        await self.put(
            store,
            Course(course_id, "", "generic", tuple(modules), discovered=True, source="discovered"),
        )
        return True


PROGRESS_FIELDS = (
    "status",
    "started_at",
    "last_activity_at",
    "completed_at",
    "viewed",
    "required",
    "viewed_ids",
    "attempts",
    "best_score",
    "passed",
    "passed_at",
    "waived",
    "percent",
    "discovered",
    # Issue 11 (lrs.progress.rules.summarize): the module waiver's moment and the per-item list.
    "waived_at",
    "items",
    "items_total",
    "items_satisfied",
)


class ProgressRepository:
    """Progress records keyed by (store, learner, course, module), written with an optimistic
    version check so that two workers can never overwrite each other's newer result.

    Every change also takes the next number of its store's change sequence (`seq`), allocated
    in the database, not read from a clock: it is the SSE event id, and resuming a stream
    replays the records whose `seq` is above the client's Last-Event-ID, whichever process
    wrote them and whatever its clock said (design notes 1.5 and 6)."""

    def __init__(self, database: Database) -> None:
        self.records: Collection = database["progress"]
        self.counters: Collection = database["counters"]

    async def ensure_indexes(self) -> None:
        await self.records.create_index(
            [("store", 1), ("learner", 1), ("course", 1), ("module", 1)], unique=True
        )
        await self.records.create_index([("store", 1), ("course", 1), ("module", 1)])
        await self.records.create_index([("store", 1), ("updated_key", 1)])
        await self.records.create_index([("store", 1), ("seq", 1)])

    async def next_seq(self, store: str) -> int:
        """The next number of the store's change sequence: one atomic increment of a counter
        document, so concurrent writers in any number of processes never share a number."""
        counter = await self.counters.find_one_and_update(
            {"_id": _sequence(store)}, {"$inc": {"seq": 1}}, upsert=True
        )
        assert counter is not None  # an upserting find_one_and_update returns the document
        return int(counter["seq"])

    async def last_seq(self, store: str) -> int:
        """The last number the store's sequence handed out (0: none yet)."""
        counter = await self.counters.find_one({"_id": _sequence(store)})
        return int(counter["seq"]) if counter else 0

    async def get(
        self, store: str, learner: str, course: str, module: str
    ) -> dict[str, Any] | None:
        return await self.records.find_one(
            {"store": store, "learner": learner, "course": course, "module": module},
            projection={"_id": 0},
        )

    async def write(
        self,
        store: str,
        learner: str,
        course: str,
        module: str,
        fields: dict[str, Any],
        expected_version: int | None,
    ) -> dict[str, Any] | None:
        """Write the record if its version is still `expected_version` (None: must not exist).
        Returns the new record, or None when another writer got there first."""
        key = {"store": store, "learner": learner, "course": course, "module": module}
        # Taken after the caller read `expected_version`: a write that succeeds on top of
        # another's therefore always carries a higher number. A failed attempt leaves a gap in
        # the sequence, which is harmless.
        seq = await self.next_seq(store)
        updated_key = monotonic_now_micros()
        stamp = {
            "seq": seq,
            # The writer's clock: only for `updated_at` (and resuming from ids sent before the
            # sequence existed), never for ordering.
            "updated_key": updated_key,
            "updated_at": datetime.fromtimestamp(updated_key / 1e6, UTC).isoformat(),
        }
        if expected_version is None:
            doc = {**key, **fields, **stamp, "version": 1}
            try:
                await self.records.insert_one(dict(doc))
            except DuplicateKeys:
                return None
            return doc
        matched = await self.records.update_one(
            {**key, "version": expected_version},
            {"$set": {**fields, **stamp, "version": expected_version + 1}},
        )
        if not matched:
            return None
        return {**key, **fields, **stamp, "version": expected_version + 1}

    async def claim(
        self,
        store: str,
        learner: str,
        course: str,
        module: str,
        expected_version: int | None,
        fields: dict[str, Any],
    ) -> bool:
        """Move the version without changing what the record says (None: create the record
        quietly, e.g. a not_started one). False when another writer got there first."""
        key = {"store": store, "learner": learner, "course": course, "module": module}
        if expected_version is None:
            quiet = {"version": 1, "updated_key": 0, "updated_at": None}
            try:
                await self.records.insert_one({**key, **fields, **quiet})
            except DuplicateKeys:
                return False
            return True
        return bool(
            await self.records.update_one(
                {**key, "version": expected_version}, {"$set": {"version": expected_version + 1}}
            )
        )

    async def delete_module(self, store: str, course: str, module: str) -> None:
        await self.records.delete_many({"store": store, "course": course, "module": module})

    async def delete_course(self, store: str, course: str) -> None:
        await self.records.delete_many({"store": store, "course": course})

    async def module_records(self, store: str, course: str, module: str) -> list[dict[str, Any]]:
        """Every record of one module (not_started ones included), as `get` returns them."""
        return await self.records.find(
            {"store": store, "course": course, "module": module}, projection={"_id": 0}
        )

    async def find(
        self,
        store: str,
        *,
        learner: str | None = None,
        course: str | None = None,
        module: str | None = None,
        status: str | None = None,
        after: tuple[str, str, str] | None = None,
        limit: int = 100,
        include_not_started: bool = False,
    ) -> list[dict[str, Any]]:
        """Records ordered by (learner, course, module); `after` is the last key seen.

        A not_started record only says that a learner's statements for the module were all
        retracted (or never counted); unless asked for by status, such records are left out,
        so a learner with none and one with a retracted record look the same."""
        clauses: list[dict[str, Any]] = [{"store": store}]
        if status is None and not include_not_started:
            clauses.append({"status": {"$ne": "not_started"}})
        for name, value in (
            ("learner", learner),
            ("course", course),
            ("module", module),
            ("status", status),
        ):
            if value is not None:
                clauses.append({name: value})
        if after is not None:
            a_learner, a_course, a_module = after
            clauses.append(
                {
                    "$or": [
                        {"learner": {"$gt": a_learner}},
                        {"learner": a_learner, "course": {"$gt": a_course}},
                        {"learner": a_learner, "course": a_course, "module": {"$gt": a_module}},
                    ]
                }
            )
        return await self.records.find(
            {"$and": clauses},
            projection={"_id": 0},
            sort=[("learner", 1), ("course", 1), ("module", 1)],
            limit=limit,
        )

    async def changed_since(
        self, store: str, event_id: int, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Records changed after the change an SSE event id names, oldest change first, each
        in its current state (SSE resumption).

        An id above the store's sequence is not one of its numbers: an id sent before the
        sequence existed (the writer's clock in microseconds, far above any sequence number).
        It keeps its old meaning, the records changed after that moment, so that clients
        connected across the upgrade resume instead of missing changes; those records carry
        sequence numbers as ids from then on. Any other unknown id (e.g. from a database since
        wiped) thereby replays every record, which is also the safe answer."""
        if event_id <= await self.last_seq(store):
            return await self.records.find(
                {"store": store, "seq": {"$gt": event_id}},
                projection={"_id": 0},
                sort=[("seq", 1)],
                limit=limit,
            )
        return await self.records.find(
            {"store": store, "updated_key": {"$gt": event_id}},
            projection={"_id": 0},
            sort=[("updated_key", 1)],
            limit=limit,
        )


def _sequence(store: str) -> str:
    return f"progress:{store}"
