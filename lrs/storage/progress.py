"""Storage for the course catalogue and the derived progress records.

The derivation engine (lrs.progress.deriver) reads and writes these inside units of work
(lrs.storage.unit): the generator functions here (`*_work`) are the steps it composes; the
async methods serve the API and the CLI.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from lrs.progress.catalogue import Course, Item, Module
from lrs.progress.discovery import Discovery, Known, discovered_item
from lrs.storage.database import Collection, Database, DuplicateKeys
from lrs.storage.unit import (
    Work,
    count,
    find,
    find_one,
    find_one_and_update,
    insert_many,
    insert_one,
    update_one,
)
from lrs.xapi.jsontext import compact_json_bytes
from lrs.xapi.timestamps import monotonic_now_micros

COURSES = "courses"
ROWS = "course_activities"  # activity -> the (course, module) pairs it belongs to
COUNTS = "module_counts"  # items of each discovered module, counted as they are discovered


@dataclass
class CatalogueReads:
    """Course documents and discovered modules' sizes as one round of derivation read them:
    each read once, however many of the round's statements need it. A discovery made in the
    round forgets what it changed (`forget`)."""

    courses: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    totals: dict[tuple[str, str], int] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by activity id

    def forget(self, course_id: str) -> None:
        self.courses.pop(course_id, None)
        for key in [key for key in self.totals if key[0] == course_id]:
            del self.totals[key]
        self.rows.clear()  # a discovery adds rows for ids of its own choosing


RECORDS = "progress"
COUNTERS = "counters"


def _module_doc(module: Module) -> dict[str, Any]:
    doc = asdict(module)
    doc["items"] = [asdict(item) for item in module.items]
    doc.pop("item_total", None)
    return doc


def module_from_doc(doc: dict[str, Any], **changes: Any) -> Module:
    items = tuple(Item(**item) for item in doc["items"])
    fields = {k: v for k, v in doc.items() if k != "item_total"}
    return Module(**{**fields, "items": items, **changes})


def _course_from(doc: dict[str, Any], modules: tuple[Module, ...] | None = None) -> Course:
    return Course(
        id=doc["id"],
        title=doc.get("title", ""),
        profile=doc.get("profile", "generic"),
        modules=modules
        if modules is not None
        else tuple(module_from_doc(m) for m in doc["modules"]),
        discovered=doc.get("discovered", False),
        source=doc.get("source", "definition"),
        extra={"definition": doc.get("definition"), "updated_key": doc.get("updated_key", 0)},
        emit_satisfied=doc.get("emit_satisfied", False),
    )


def _count_id(store: str, course: str, module: str) -> str:
    return f"{store}\x1f{course}\x1f{module}"


class CatalogueRepository:
    """Courses, plus an index from every activity id to the modules it belongs to, so that the
    derivation finds the modules a statement touches with one query.

    A discovered module (design notes 3.3) can grow to many items, one statement at a time: its
    items are kept only as index rows (one insert per new item) with a counter beside them, and
    its course document lists just the module (and its assessments). So discovering an item
    costs the same however large the module is."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.courses: Collection = database[COURSES]
        self.activities: Collection = database[ROWS]
        self.counts: Collection = database[COUNTS]

    async def ensure_indexes(self) -> None:
        await self.courses.create_index([("store", 1), ("id", 1)], unique=True)
        await self.activities.create_index(
            [("store", 1), ("activity", 1), ("course", 1), ("module", 1)], unique=True
        )
        await self.activities.create_index([("store", 1), ("course", 1), ("module", 1)])
        await self.activities.drop_index([("store", 1), ("course", 1)])  # the line above serves

    async def put(self, store: str, course: Course, definition: Any = None) -> Course | None:
        """Create or replace a defined course; returns the previous version, if any."""
        previous = await self.get(store, course.id)
        doc = {
            "store": store,
            "id": course.id,
            "title": course.title,
            "profile": course.profile,
            "source": course.source,
            "discovered": course.discovered,
            "emit_satisfied": course.emit_satisfied,
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
        await self.counts.delete_many(
            {"_id": {"$in": [_count_id(store, course.id, m.id) for m in course.modules]}}
        )
        docs = [
            {"store": store, "activity": activity, "course": course.id, "module": module}
            for activity, module in sorted(rows)
        ]
        # A concurrent re-index of the same course may have written the same rows.
        with contextlib.suppress(DuplicateKeys):
            await self.activities.insert_many(docs)

    async def get(self, store: str, course_id: str) -> Course | None:
        """A course with every module complete (a discovered module with all its items)."""
        doc = await self.courses.find_one({"store": store, "id": course_id})
        if doc is None:
            return None
        if not doc.get("discovered"):
            return _course_from(doc)
        rows = await self.activities.find(
            {"store": store, "course": course_id}, projection={"activity": 1, "module": 1}
        )
        return _course_from(doc, tuple(_complete(m, rows) for m in doc["modules"]))

    async def list(self, store: str) -> list[Course]:
        docs = await self.courses.find({"store": store}, sort=[("id", 1)], projection={"id": 1})
        courses = [await self.get(store, doc["id"]) for doc in docs]
        return [course for course in courses if course is not None]

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
        doc = await self.courses.find_one({"store": store, "id": course_id})
        deleted = await self.courses.delete_many({"store": store, "id": course_id})
        await self.activities.delete_many({"store": store, "course": course_id})
        if doc is not None:
            ids = [_count_id(store, course_id, m["id"]) for m in doc["modules"]]
            await self.counts.delete_many({"_id": {"$in": ids}})
        return deleted > 0

    async def modules_for(self, store: str, activity_ids: list[str]) -> list[Module]:
        """Modules that contain any of the activities (as module id or item); a discovered
        module partly loaded (see `modules_for_work`)."""
        return await self.database.run(self.modules_for_work(store, activity_ids), write=False)

    # --- units of work for the derivation ---------------------------------------------------

    def modules_for_work(
        self, store: str, activity_ids: list[str], reads: CatalogueReads | None = None
    ) -> Work[list[Module]]:
        """Modules that contain any of the activities. A discovered module comes partly loaded
        (`Module.item_total` set): its assessments and those of `activity_ids` that are its
        items; the caller adds what else it needs (`with_items`)."""
        if not activity_ids:
            return []
        reads = reads if reads is not None else CatalogueReads()
        yield from self.rows_work(store, activity_ids, reads)
        rows = [row for activity in set(activity_ids) for row in reads.rows[activity]]
        wanted: dict[tuple[str, str], set[str]] = {}
        for row in rows:
            members = wanted.setdefault((row["course"], row["module"]), set())
            if row["activity"] != row["module"]:
                members.add(row["activity"])
        modules: list[Module] = []
        for course_id in sorted({course for course, _ in wanted}):
            doc = yield from self.course_doc_work(store, course_id, reads)
            if doc is None:
                continue
            for module_doc in doc["modules"]:
                members = wanted.get((course_id, module_doc["id"]))
                if members is None:
                    continue
                module = module_from_doc(module_doc)
                if module.discovered:
                    total = yield from self.item_total_work(store, course_id, module.id, reads)
                    module = with_items(module, members, total)
                modules.append(module)
        return modules

    def rows_work(self, store: str, activity_ids: list[str], reads: CatalogueReads) -> Work[None]:
        """Read the catalogue rows of those of the activities `reads` does not hold yet, in
        one query (a round reads them for all its statements at once)."""
        missing = sorted({a for a in activity_ids if a not in reads.rows})
        if not missing:
            return
        for activity in missing:
            reads.rows[activity] = []
        for row in (yield find(ROWS, {"store": store, "activity": {"$in": missing}})):
            reads.rows[row["activity"]].append(row)

    def course_doc_work(
        self, store: str, course_id: str, reads: CatalogueReads | None = None
    ) -> Work[dict[str, Any] | None]:
        """A course's document (read once per round with `reads`)."""
        if reads is not None and course_id in reads.courses:
            return reads.courses[course_id]
        doc = yield find_one(COURSES, {"store": store, "id": course_id})
        if reads is not None:
            reads.courses[course_id] = doc
        return doc

    def item_total_work(
        self, store: str, course: str, module: str, reads: CatalogueReads | None = None
    ) -> Work[int]:
        """How many items a discovered module has (read once per round with `reads`)."""
        if reads is not None and (course, module) in reads.totals:
            return reads.totals[(course, module)]
        total = yield from self._item_total_work(store, course, module)
        if reads is not None:
            reads.totals[(course, module)] = total
        return total

    def _item_total_work(self, store: str, course: str, module: str) -> Work[int]:
        # Counted once from its rows for a module an earlier version discovered.
        counter = yield find_one(COUNTS, {"_id": _count_id(store, course, module)})
        if counter is not None:
            return int(counter["n"])
        n = yield count(
            ROWS, {"store": store, "course": course, "module": module, "activity": {"$ne": module}}
        )
        with contextlib.suppress(DuplicateKeys):
            yield insert_one(COUNTS, {"_id": _count_id(store, course, module), "n": n})
        counter = yield find_one(COUNTS, {"_id": _count_id(store, course, module)})
        return int(counter["n"]) if counter else n

    def known_work(self, store: str, activity_ids: list[str]) -> Work[dict[str, Known]]:
        """What the catalogue knows of each of these ids (lrs.progress.discovery): part of a
        defined course, or a discovered course, module or item; unknown ids are left out."""
        wanted = sorted(set(activity_ids))
        if not wanted:
            return {}
        rows = yield find(ROWS, {"store": store, "activity": {"$in": wanted}})
        courses = {row["course"] for row in rows} | set(wanted)
        docs = yield find(
            COURSES,
            {"store": store, "id": {"$in": sorted(courses)}},
            projection={"id": 1, "discovered": 1},
        )
        defined = {doc["id"] for doc in docs if not doc.get("discovered")}
        known: dict[str, Known] = {}
        for doc in docs:
            if doc["id"] in wanted:
                known[doc["id"]] = "course" if doc.get("discovered") else "defined"
        for row in rows:
            activity = row["activity"]
            if row["course"] in defined:
                known[activity] = "defined"
            elif known.get(activity) != "defined":
                kind: Known = "module" if activity == row["module"] else "item"
                if known.get(activity) not in ("course", "module"):
                    known[activity] = kind
        return known

    def discover_work(self, store: str, found: Discovery) -> Work[tuple[int | None, bool]]:
        """Apply a discovery (lrs.progress.discovery): the item joins its discovered module
        (created with its course as needed), or becomes the module's assessment. Returns the
        module's new item count when it grew (else None), and whether an item's role changed.
        Defined courses are never changed by discovery."""
        course_id, module_id = found.course_id, found.module_id
        for _ in range(8):  # compare-and-set on the course document (roles, new modules)
            doc = yield find_one(COURSES, {"store": store, "id": course_id})
            if doc is not None and not doc.get("discovered"):
                return None, False
            module_doc = next(
                (m for m in (doc or {}).get("modules", []) if m["id"] == module_id), None
            )
            current = module_from_doc(module_doc) if module_doc else None
            known_role = current.item(found.item_id) if current else None
            # The course document lists the module and its assessments; content items are rows.
            if (
                current is None
                or (found.role == "assessment" and known_role is None)
                or (
                    known_role is not None
                    and known_role.role != "assessment"
                    and found.role == "assessment"
                )
            ):
                module = current or Module(course_id, module_id, "", (), discovered=True)
                if found.role == "assessment":
                    items = tuple(i for i in module.items if i.id != found.item_id)
                    module = replace(module, items=(*items, discovered_item(found)))
                modules = [m for m in (doc or {}).get("modules", []) if m["id"] != module_id]
                stamp = {
                    "modules": [*modules, _module_doc(module)],
                    "updated_key": monotonic_now_micros(),
                }
                if doc is None:
                    try:
                        yield insert_one(
                            COURSES,
                            {
                                "store": store,
                                "id": course_id,
                                "title": "",
                                "profile": "generic",
                                "source": "discovered",
                                "discovered": True,
                                "definition": None,
                                "updated": datetime.now(UTC).isoformat(),
                                "derivation_pending": False,
                                **stamp,
                            },
                        )
                    except DuplicateKeys:
                        continue  # created meanwhile (or defined): look again
                else:
                    matched = yield update_one(
                        COURSES,
                        {"_id": doc["_id"], "updated_key": doc.get("updated_key")},
                        {"$set": stamp},
                    )
                    if not matched:
                        continue
                if current is None:
                    with contextlib.suppress(DuplicateKeys):
                        yield insert_one(
                            ROWS,
                            {
                                "store": store,
                                "activity": module_id,
                                "course": course_id,
                                "module": module_id,
                            },
                        )
            break
        role_changed = (
            known_role is not None
            and found.role == "assessment"
            and (known_role.role != "assessment")
        )
        total = yield from self.item_total_work(store, course_id, module_id)
        try:
            yield insert_one(
                ROWS,
                {
                    "store": store,
                    "activity": found.item_id,
                    "course": course_id,
                    "module": module_id,
                },
            )
        except DuplicateKeys:
            # Already an item: only its role may have changed (content -> assessment).
            return None, role_changed or (known_role is None and found.role == "assessment")
        counter = yield find_one_and_update(
            COUNTS, {"_id": _count_id(store, course_id, module_id)}, {"$inc": {"n": 1}}, upsert=True
        )
        return (int(counter["n"]) if counter else total + 1), False

    def add_content_items_work(
        self, store: str, course_id: str, module_id: str, item_ids: list[str]
    ) -> Work[int]:
        """New content items of a discovered module that exists already, with one insert and
        one count: what `discover_work` does for each, when the course document does not
        change (the document lists only modules and assessments). The module's count must
        exist (`item_total_work`). Returns the module's item count after them.

        As in `discover_work`, the rows come first, then the count: an item whose row was
        there already (another writer's) is not counted again. Where the two are not one
        transaction (MongoDB), a crash between them leaves the module's count short by the
        items of that insert (`discover_work`: by one)."""
        rows = [
            {"store": store, "activity": item, "course": course_id, "module": module_id}
            for item in item_ids
        ]
        refused: list[int] = []
        try:
            yield insert_many(ROWS, rows)
        except DuplicateKeys as exc:
            refused = exc.indexes
        count_id = _count_id(store, course_id, module_id)
        added = len(rows) - len(set(refused))
        if added:
            counter = yield find_one_and_update(
                COUNTS, {"_id": count_id}, {"$inc": {"n": added}}, upsert=True
            )
        else:
            counter = yield find_one(COUNTS, {"_id": count_id})
        return int(counter["n"]) if counter else added


def with_items(module: Module, item_ids: set[str] | list[str], total: int) -> Module:
    """A discovered module's view holding its assessments plus these items (content unless
    they are assessments), with its real item count: what `summarize` needs."""
    known = {item.id for item in module.items}
    extra = tuple(Item(i, "content", "Completed") for i in sorted(set(item_ids) - known))
    return Module(
        module.course_id,
        module.id,
        module.title,
        module.items + extra,
        module.rule,
        module.profile,
        module.discovered,
        item_total=total,
    )


def _complete(module_doc: dict[str, Any], rows: list[dict[str, Any]]) -> Module:
    """A discovered module with every item its rows name."""
    module = module_from_doc(module_doc)
    members = {r["activity"] for r in rows if r["module"] == module.id} - {module.id}
    known = {item.id for item in module.items}
    extra = tuple(Item(i, "content", "Completed") for i in sorted(members - known))
    return module_from_doc(module_doc, items=module.items + extra)


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


# A record's bulky fields, stored as one JSON text each: a record of 20 items held about 280
# small values in them, and every derivation decoded, compared and encoded them value by value
# on each read and write (BSON decoding such a record took 76 us, encoding it 47; with the two
# as text, 10 and 9). As text they are one value each, compared as text; readers get them
# back as lists and objects (`unpack`).
PACKED = ("items", "facts")


def pack(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of `record` as stored: its PACKED fields as JSON text (those already text are
    kept)."""
    doc = dict(record)
    for name in PACKED:
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            doc[name] = _packed(value)
    return doc


def _packed(value: Any) -> str:
    # Non-ASCII characters are escaped only where orjson refuses the value (a lone surrogate),
    # so that the text is always valid UTF-8, as BSON requires.
    return compact_json_bytes(value).decode()


def unpack(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored record with its PACKED fields decoded, in place (records written by earlier
    versions hold them decoded already)."""
    for name in PACKED:
        value = doc.get(name)
        if isinstance(value, str):
            doc[name] = _unpacked(value)
    return doc


def _unpacked(text: str) -> Any:
    # Not `jsontext.parse_stored`: a record holds no integer beyond 64 bits (moments are
    # microseconds, scores floats), so its guard for them would only cost time (10 us on a
    # record of 200 items, about 1.5% of folding a statement into it).
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # escaped lone surrogates, which orjson refuses
        return json.loads(text)


def stored_facts(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The facts of a stored record (None: written before records kept facts)."""
    value = doc.get("facts")
    return _unpacked(value) if isinstance(value, str) else value


def differs(stored: dict[str, Any], record: dict[str, Any], names: tuple[str, ...]) -> bool:
    """Whether any of `names` differs between a stored record and a record as derived."""
    for name in names:
        new = record.get(name)
        if name in PACKED and new is not None and not isinstance(new, str):
            new = _packed(new)
        if stored.get(name) != new:
            return True
    return False


def record_key(learner: str, course: str, module: str, registration: str | None) -> str:
    """The unique key of a progress record (its registration only for per-registration
    courses; None otherwise, stored as "")."""
    return "\x1f".join((learner, course, module, registration or ""))


def _sequence(store: str) -> str:
    return f"progress:{store}"


class ProgressRepository:
    """Progress records keyed by (store, learner, course, module[, registration]), written with
    an optimistic version check so that two writers can never overwrite each other's newer
    result.

    Every change also takes a number of its store's change sequence (`seq`), allocated in the
    database, not read from a clock: it is the SSE event id, and resuming a stream replays the
    records whose `seq` is above the client's Last-Event-ID, whichever process wrote them and
    whatever its clock said (design notes 1.5 and 6). A derivation round takes the numbers it
    needs in one block."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.records: Collection = database[RECORDS]
        self.counters: Collection = database[COUNTERS]

    async def ensure_indexes(self) -> None:
        # Earlier versions keyed records by (store, learner, course, module), unique; records
        # per registration share those, so the unique key is `key` now.
        await self.records.drop_index([("store", 1), ("learner", 1), ("course", 1), ("module", 1)])
        await self.records.create_index([("store", 1), ("key", 1)], unique=True)
        await self.records.create_index(
            [("store", 1), ("learner", 1), ("course", 1), ("module", 1), ("registration", 1)]
        )
        await self.records.create_index([("store", 1), ("course", 1), ("module", 1)])
        await self.records.create_index([("store", 1), ("seq", 1)])
        # Resuming from an SSE id sent before the sequence existed reads by `updated_key`:
        # rare enough for a scan, and every record write would pay for an index.
        await self.records.drop_index([("store", 1), ("updated_key", 1)])

    async def migrate(self) -> int:
        """Give records written by an earlier version their `key`; returns how many."""
        docs = await self.records.find(
            {"key": {"$exists": False}}, projection={"learner": 1, "course": 1, "module": 1}
        )
        for doc in docs:
            key = record_key(doc["learner"], doc["course"], doc["module"], None)
            await self.records.update_one(
                {"_id": doc["_id"]}, {"$set": {"key": key, "registration": ""}}
            )
        return len(docs)

    async def next_seq(self, store: str) -> int:
        """The next number of the store's change sequence."""
        return await self.database.run(seq_block_work(store, 1))

    async def last_seq(self, store: str) -> int:
        """The last number the store's sequence handed out (0: none yet)."""
        counter = await self.counters.find_one({"_id": _sequence(store)})
        return int(counter["seq"]) if counter else 0

    async def get(
        self, store: str, learner: str, course: str, module: str, registration: str | None = None
    ) -> dict[str, Any] | None:
        doc = await self.records.find_one(
            {"store": store, "key": record_key(learner, course, module, registration)},
            projection={"_id": 0},
        )
        return unpack(doc) if doc is not None else None

    async def delete_module(self, store: str, course: str, module: str) -> None:
        await self.records.delete_many({"store": store, "course": course, "module": module})

    async def delete_course(self, store: str, course: str) -> None:
        await self.records.delete_many({"store": store, "course": course})

    async def find(
        self,
        store: str,
        *,
        learner: str | None = None,
        course: str | None = None,
        module: str | None = None,
        status: str | None = None,
        registration: str | None = None,
        after: tuple[str, str, str, str] | None = None,
        limit: int = 100,
        include_not_started: bool = False,
        items_as_text: bool = False,
    ) -> list[dict[str, Any]]:
        """Records ordered by (learner, course, module, registration); `after` is the last key
        seen. `registration`: only the records kept for it (per-registration courses).
        `items_as_text`: each record's item list as stored, JSON text, for the API to write out
        as is (lrs.progress.deriver.public_record).

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
            ("registration", registration),
        ):
            if value is not None:
                clauses.append({name: value})
        if after is not None:
            a_learner, a_course, a_module, a_registration = after
            clauses.append(
                {
                    "$or": [
                        {"learner": {"$gt": a_learner}},
                        {"learner": a_learner, "course": {"$gt": a_course}},
                        {"learner": a_learner, "course": a_course, "module": {"$gt": a_module}},
                        {
                            "learner": a_learner,
                            "course": a_course,
                            "module": a_module,
                            "registration": {"$gt": a_registration},
                        },
                    ]
                }
            )
        docs = await self.records.find(
            {"$and": clauses},
            projection={"_id": 0, "facts": 0},
            sort=[("learner", 1), ("course", 1), ("module", 1), ("registration", 1)],
            limit=limit,
        )
        return docs if items_as_text else [unpack(doc) for doc in docs]

    async def changed_since(
        self, store: str, event_id: int, limit: int = 1000, *, items_as_text: bool = False
    ) -> list[dict[str, Any]]:
        """Records changed after the change an SSE event id names, oldest change first, each
        in its current state (SSE resumption; `items_as_text` as in `find`).

        An id above the store's sequence is not one of its numbers: an id sent before the
        sequence existed (the writer's clock in microseconds, far above any sequence number).
        It keeps its old meaning, the records changed after that moment, so that clients
        connected across the upgrade resume instead of missing changes; those records carry
        sequence numbers as ids from then on. Any other unknown id (e.g. from a database since
        wiped) thereby replays every record, which is also the safe answer."""
        if event_id <= await self.last_seq(store):
            docs = await self.records.find(
                {"store": store, "seq": {"$gt": event_id}},
                projection={"_id": 0, "facts": 0},
                sort=[("seq", 1)],
                limit=limit,
            )
        else:
            docs = await self.records.find(
                {"store": store, "updated_key": {"$gt": event_id}},
                projection={"_id": 0, "facts": 0},
                sort=[("updated_key", 1)],
                limit=limit,
            )
        return docs if items_as_text else [unpack(doc) for doc in docs]


# --- units of work for the derivation -------------------------------------------------------


def seq_block_work(store: str, n: int) -> Work[int]:
    """Take `n` consecutive numbers of the store's change sequence in one increment; returns
    the first."""
    counter = yield find_one_and_update(
        COUNTERS, {"_id": _sequence(store)}, {"$inc": {"seq": n}}, upsert=True
    )
    return int(counter["seq"]) - n + 1


def records_work(store: str, keys: list[str]) -> Work[dict[str, dict[str, Any]]]:
    """The records of these keys, as stored (see `pack`)."""
    if not keys:
        return {}
    docs = yield find(RECORDS, {"store": store, "key": {"$in": sorted(set(keys))}})
    return {doc["key"]: doc for doc in docs}


def module_records_work(store: str, course: str, module: str) -> Work[list[dict[str, Any]]]:
    """Every record of one module (not_started ones included), as stored (see `pack`)."""
    docs = yield find(RECORDS, {"store": store, "course": course, "module": module})
    return docs


def stamped(record: dict[str, Any], seq: int, version: int) -> dict[str, Any]:
    """A record as written: with its change-sequence number, version and write time."""
    updated_key = monotonic_now_micros()
    doc = {
        **record,
        "seq": seq,
        # The writer's clock: only for `updated_at` (and resuming from ids sent before the
        # sequence existed), never for ordering.
        "updated_key": updated_key,
        "updated_at": datetime.fromtimestamp(updated_key / 1e6, UTC).isoformat(),
        "version": version,
    }
    doc.pop("_id", None)
    return doc


def write_record_work(
    record: dict[str, Any], previous: dict[str, Any] | None, seq: int
) -> Work[dict[str, Any] | None]:
    """Write a record over `previous` (the version read, as stored; None: it must not exist
    yet), if nobody wrote it since; returns what was written (unpacked), or None when another
    writer got there first. Only the fields that changed are sent."""
    if previous is None:
        doc = stamped(record, seq, 1)
        try:
            yield insert_one(RECORDS, pack(doc))
        except DuplicateKeys:
            return None
        return unpack(doc)
    doc = stamped(record, seq, previous["version"] + 1)
    changes = {name: value for name, value in pack(doc).items() if previous.get(name) != value}
    matched = yield update_one(
        RECORDS,
        {"store": doc["store"], "key": doc["key"], "version": previous["version"]},
        {"$set": changes},
    )
    return unpack(doc) if matched else None


def insert_records_work(docs: list[dict[str, Any]]) -> Work[set[int]]:
    """Insert new records (version 1); returns the positions another writer created first."""
    if not docs:
        return set()
    try:
        yield insert_many(RECORDS, [pack(doc) for doc in docs])
    except DuplicateKeys as exc:
        return set(exc.indexes)
    return set()
