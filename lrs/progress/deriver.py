"""Applies the rules: from stored statements to progress records (design notes 1, 5, 6).

Incremental: each progress record keeps the facts its statements established (lrs.progress.rules:
per-item first view, first pass, attempts, ...), and a new statement is folded into them, so
deriving it costs the same however long the learner's history is. The statements are read again
only when folding cannot be trusted: a voided statement (its contribution must go), a reset
that moves the barrier, a record from an earlier version (no facts yet), a catalogue change, or
another writer's concurrent update (optimistic version check).

A round of statements is one unit of work (lrs.storage.unit): on the embedded store one
transaction in which the records, the change-sequence numbers and the outbox entries are
written together; on MongoDB step by step, every record write checked against the version read.
Used by the Celery tasks in production and in-process in the embedded mode: the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lrs.events import EventBus
from lrs.progress.catalogue import Module
from lrs.progress.cmi5 import satisfied_statement, satisfied_units, session_of, units
from lrs.progress.discovery import Discovery, Known, discovery, role_of
from lrs.progress.linking import linked_ids, object_id
from lrs.progress.profiles import Profile, Profiles
from lrs.progress.rules import (
    Facts,
    derive_facts,
    fold,
    learner_name,
    statement_micros,
    summarize,
)
from lrs.storage.database import DERIVED_COLLECTIONS, Database
from lrs.storage.outbox import COLLECTION as OUTBOX
from lrs.storage.progress import (
    PROGRESS_FIELDS,
    CatalogueReads,
    CatalogueRepository,
    ProgressRepository,
    differs,
    insert_records_work,
    module_from_doc,
    module_records_work,
    record_key,
    records_work,
    seq_block_work,
    stamped,
    stored_facts,
    with_items,
    write_record_work,
)
from lrs.storage.statement_docs import narrowing_term, term
from lrs.storage.statement_writes import voided_by_visible
from lrs.storage.statements import StatementRepository
from lrs.storage.unit import Work, delete_many, find, find_one, update_one
from lrs.xapi.agents import agent_from_key
from lrs.xapi.jsontext import JSONText, parse_stored
from lrs.xapi.timestamps import monotonic_now_micros, parse_timestamp, to_micros

log = logging.getLogger("lrs.progress")

_MAX_ATTEMPTS = 20
# Fields of a record that say what it is (a change to any of them is written); `seq` and
# friends say when it was written.
_CONTENT = (*PROGRESS_FIELDS, "learner_name", "facts")
_PUBLIC_HIDDEN = ("_id", "store", "updated_key", "seq", "facts", "key")

Pair = tuple[str, str, str, str | None]  # learner, course, module, registration
ModuleKey = tuple[str, str]  # course, module


class VersionConflict(RuntimeError):
    pass


# Rounds up to this many statements are one unit of work; larger ones run in chunks of
# statements resolved, then of learner-module pairs folded and written.
_ONE_UNIT = 500
# How many statements a worker's round takes at most (its own and others still owed).
CATCH_UP_STATEMENTS = 5000
_RESOLVE_CHUNK = 1000
_APPLY_CHUNK = 250
# ...and fewer where the records are large: a unit holds its records twice (as read and as
# written), and a learner's record grows with the items they touched (a discovered module).
# About this many record items per unit (records of 20 items: _APPLY_CHUNK pairs; of 150
# items: 66 pairs).
_UNIT_ITEMS = 10_000
# What a unit that writes records may write (with the catalogue a recompute may read and
# complete), and what closing a round writes: declared, so that on the embedded store each
# locks only the file it writes (`Database.run`).
_RECORD_WRITES = DERIVED_COLLECTIONS
_CLOSE_WRITES = frozenset({OUTBOX})
_CATALOGUE_WRITES = frozenset({"course_activities", "module_counts"})
# What is known of a unit's ids (1,000 statements, about 3,000 ids) took 12.6 ms to read at
# once on the embedded store, that of one statement's ids 0.24 ms: a unit that discovers
# rarely reads per statement, one that keeps discovering reads everything after this many.
_KNOWN_ALL_AFTER = 16


@dataclass
class _Plan:
    """What a round's statements call for: the statements to fold into each pair's record,
    the pairs to recompute from all their statements, and the modules involved."""

    folds: dict[Pair, list[dict[str, Any]]] = field(default_factory=dict)
    recompute: set[Pair] = field(default_factory=set)
    modules: dict[ModuleKey, Module] = field(default_factory=dict)
    # A discovered module's partial views (one per statement context), until `merge_views`.
    views: dict[ModuleKey, list[Module]] = field(default_factory=dict)

    def add_view(self, module: Module) -> None:
        key = (module.course_id, module.id)
        if module.discovered:
            self.views.setdefault(key, []).append(module)
        else:
            self.modules[key] = module

    def merge_views(self) -> None:
        """Each discovered module's views as one, built once per round: merged statement by
        statement, the view was rebuilt at each statement that discovered an item, a cost that
        grew with the square of the items a round discovers."""
        for key, views in self.views.items():
            known = self.modules.get(key)
            self.modules[key] = _merged([known, *views] if known is not None else views)
        self.views.clear()

    def pairs(self) -> list[Pair]:
        return sorted(set(self.folds) | self.recompute, key=lambda p: (*p[:3], p[3] or ""))


@dataclass
class Round:
    """What a unit of derivation did: the records whose public fields changed (to publish),
    and the discovered modules that grew (course, module) -> their new item count."""

    changed: list[dict[str, Any]] = field(default_factory=list)
    grown: dict[ModuleKey, int] = field(default_factory=dict)
    # Of a round run as several units, what the units done so far changed and published
    # (Deriver._release): how many records, and the (learner, course, registration) groups
    # whose records they completed (what `_satisfied` looks at).
    released: int = 0
    completed: set[tuple[str, str, str]] = field(default_factory=set)
    # (learner, course, registration) -> the round's statements for it: the one that made a
    # block satisfied names the AU session of its `satisfied` statement (cmi5 9.3.9)
    triggers: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)


def _registration(module: Module, statement: dict[str, Any]) -> str | None:
    """The registration a record is kept per: a cmi5 course's progress belongs to a
    registration (an enrollment, cmi5 9.6.1); other content has one record per learner and
    module, whatever the registrations of its statements."""
    if module.profile != "cmi5":
        return None
    registration = (statement.get("context") or {}).get("registration")
    return registration.lower() if isinstance(registration, str) else None


class Deriver:
    def __init__(
        self,
        database: Database,
        statements: StatementRepository,
        catalogue: CatalogueRepository,
        progress: ProgressRepository,
        profiles: Profiles,
        bus: EventBus,
    ) -> None:
        self.database = database
        self.statements = statements
        self.catalogue = catalogue
        self.progress = progress
        self.profiles = profiles
        self.bus = bus
        # Told of discovered modules that grew, to re-summarize their other learners soon
        # (the dispatcher); the outbox keeps it durable meanwhile.
        self.on_grown: Callable[[str, list[ModuleKey]], None] | None = None
        # Beside processes that write all the time (the derivation process, lrs.derivation_process):
        # read and fold outside the write transaction, then write in a short one with version
        # checks, as on MongoDB, so that the API's writes are not held up while this folds.
        self.brief_writes = False
        # Stores statements the LRS itself writes (cmi5 `satisfied`), with its own authority.
        self.emit: Callable[[str, list[dict[str, Any]]], Awaitable[None]] | None = None
        self.own_authority: dict[str, Any] = {"objectType": "Agent", "name": "LRS"}

    # --- entry points --------------------------------------------------------------------------

    async def derive_statements(
        self, store: str, ids: list[str], entries: list[str] | tuple[str, ...] = ()
    ) -> int:
        """Fold these statements into the records of every learner-module pair they touch,
        then delete the outbox entries that owed them. Idempotent: running it twice, or for
        statements already derived, changes nothing. Returns the number of records changed."""
        result = await self._derive_round(store, ids, list(entries))
        return await self._after(store, result)

    async def derive_owed(
        self, store: str, ids: list[str], entries: list[str], limit: int = CATCH_UP_STATEMENTS
    ) -> int:
        """A worker's round (Celery): the statements of its own outbox entries, and with them
        the store's oldest other entries still owed, up to `limit` statements. A worker that
        falls behind then catches up in large rounds, where one read and one write of a record
        serve many statements (as the in-process dispatcher's coalescing does), and a task
        whose entries an earlier round took finds nothing left to do. Messages without entries
        (sent by an earlier version) are derived as they are."""
        if not entries:
            return await self.derive_statements(store, ids)
        owed = set(await self.statements.outbox.still_owed(entries))
        if not owed:
            return 0
        round_ids = list(ids)
        round_entries = sorted(owed)
        for entry in await self.statements.outbox.oldest_of_store("derive", store, limit=100):
            if len(round_ids) >= limit:
                break
            if entry["_id"] not in owed:
                round_ids.extend(entry["ids"])
                round_entries.append(entry["_id"])
        return await self.derive_statements(store, sorted(set(round_ids)), round_entries)

    async def derive_module(self, store: str, module: Module) -> int:
        """Recompute every learner's record of one module from the statements (a catalogue
        change)."""
        result = await self.database.run(self._module_work(store, module))
        return await self._after(store, result)

    async def derive_course(self, store: str, course_id: str) -> int:
        """After a catalogue change: re-derive every module, drop records of removed modules."""
        course = await self.catalogue.get(store, course_id)
        if course is None:
            await self.progress.delete_course(store, course_id)
            return 0
        current = {m.id for m in course.modules}
        for record in await self.progress.find(
            store, course=course_id, limit=100_000, include_not_started=True
        ):
            if record["module"] not in current:
                await self.progress.delete_module(store, course_id, record["module"])
        changed = 0
        for module in course.modules:
            changed += await self.derive_module(store, module)
        await self.catalogue.mark_derived(store, course_id, course.extra.get("updated_key", 0))
        return changed

    async def resummarize(self, store: str, course_id: str, module_id: str) -> int:
        """A discovered module grew: summarize its learners' records again from their stored
        facts against its new size (no statement is read)."""
        result = await self.database.run(self._resummarize_work(store, course_id, module_id))
        return await self._after(store, result)

    async def _after(self, store: str, result: Round) -> int:
        """Once a unit's records are written: push them live, have grown discovered modules
        re-summarized, store the `satisfied` statements they call for."""
        await self._publish(store, result.changed)
        if result.grown and self.on_grown is not None:
            self.on_grown(store, list(result.grown))
        await self._satisfied(store, result)
        return result.released + len(result.changed)

    async def _release(self, store: str, result: Round) -> list[dict[str, Any]]:
        """Push live what one unit of a large round wrote, and let go of its records (returned,
        for the caller's last look): a round then holds one unit's records at a time (a
        backlog's round of 5,000 statements touched every learner of the discovered scenario,
        about 100 MB of records held to its end)."""
        written, result.changed = result.changed, []
        await self._publish(store, written)
        result.released += len(written)
        result.completed |= _completed_groups(written)
        return written

    # --- one round of statements --------------------------------------------------------------

    async def _derive_round(self, store: str, ids: list[str], entries: list[str]) -> Round:
        """A small round is one unit of work (one transaction on the embedded store). A large
        one (a backlog: rounds grow when derivation falls behind, and a pair folded once for
        many statements is what makes catching up cheap) runs as several shorter units, so
        that requests queued on the store are served in between: resolve the statements'
        modules, fold pair by pair, then clear the outbox entries. Each unit is consistent on
        its own: every pair re-checks its statements against voiding made meanwhile."""
        if len(ids) <= _ONE_UNIT and not self.brief_writes:
            return await self.database.run(self._statements_work(store, ids, entries))
        # Reads only where writes are brief: a discovery among them writes on its own.
        reads = not self.brief_writes
        result = Round()
        plan = _Plan()
        lookup = _RoundCatalogue(self.catalogue, store, result, self.profiles.get("generic"))
        for start in range(0, len(ids), _RESOLVE_CHUNK):
            chunk = ids[start : start + _RESOLVE_CHUNK]
            await self.database.run(
                self._resolve_work(store, chunk, plan, lookup, result, flush=reads), write=reads
            )
            if not reads:
                # The items discovered in bulk, with their count, in a short transaction of
                # their own (the progress file's alone): on the embedded store a crash cannot
                # leave the rows without the count (no transactions on MongoDB: see
                # `add_content_items_work`).
                await self.database.run(lookup.flush(), writes=_CATALOGUE_WRITES)
        pairs = plan.pairs()
        start, size = 0, _APPLY_CHUNK
        while start < len(pairs):
            chunk = pairs[start : start + size]
            start += len(chunk)
            if self.brief_writes:
                planned = await self.database.run(
                    self._fold_work(store, plan, chunk, lookup, recheck=True), write=False
                )
                # Records only: on the embedded store this locks the progress file alone, and
                # the API's statement writes go on meanwhile.
                await self.database.run(
                    self._write(store, planned, lookup, result), writes=_RECORD_WRITES
                )
            else:
                await self.database.run(
                    self._apply_work(store, plan, chunk, lookup, result, recheck=True)
                )
            for pair in chunk:  # its statements are folded: not needed again this round
                plan.folds.pop(pair, None)
            size = _unit_size(await self._release(store, result), size)
        # Once every record is written (committed first: a crash before this leaves the work
        # owed, never lost).
        await self.database.run(self._close_work(store, entries, result), writes=_CLOSE_WRITES)
        return result

    def _statements_work(self, store: str, ids: list[str], entries: list[str]) -> Work[Round]:
        """A whole round in one unit of work."""
        result = Round()
        plan = _Plan()
        lookup = _RoundCatalogue(self.catalogue, store, result, self.profiles.get("generic"))
        yield from self._resolve_work(store, ids, plan, lookup, result)
        # Where the unit is not one transaction, versions are read first, then whether the
        # statements still count: a statement voided after our first read was recomputed away
        # by its voiding statement's derivation, which moved the version we read or will fail
        # our version check.
        recheck = not self.database.context.atomic
        yield from self._apply_work(store, plan, plan.pairs(), lookup, result, recheck=recheck)
        yield from self._close_work(store, entries, result)
        return result

    def _resolve_work(
        self,
        store: str,
        ids: list[str],
        plan: _Plan,
        lookup: _RoundCatalogue,
        result: Round,
        flush: bool = True,
    ) -> Work[None]:
        """Read the statements and find the learner-module pairs they touch (discovering
        modules where no definition covers them). Without `flush` the new items discovered
        in bulk are left for the caller to write (`_RoundCatalogue.flush`)."""
        docs = yield find(
            "statements",
            {"store": store, "id": {"$in": ids}, "voided": {"$in": [False, True]}},
            projection={"statement": 1, "voided": 1, "learner": 1, "voids": 1, "id": 1},
        )
        # The catalogue rows of every activity the round's statements name, in one read.
        linked = [a for doc in docs if not doc["voided"] for a in linked_ids(_parsed(doc))]
        yield from self.catalogue.rows_work(store, linked, lookup.reads)
        lookup.expect(linked)
        for doc in docs:
            if doc.get("voids"):
                # Voiding retracts what the target contributed: its pairs are recomputed.
                target = yield find_one(
                    "statements",
                    {"store": store, "id": doc["voids"]},
                    projection={"statement": 1, "learner": 1},
                )
                if target is not None and target.get("learner"):
                    statement = parse_stored(target["statement"])
                    for module in (yield from lookup.modules(statement, discover=False)):
                        plan.modules.setdefault((module.course_id, module.id), module)
                        plan.recompute.add(self._pair(target["learner"], module, statement))
                continue
            if doc["voided"] or not doc.get("learner"):
                continue  # voided: its voiding statement's round recomputes without it
            statement = _parsed(doc)
            for module in (yield from lookup.modules(statement, discover=True)):
                plan.add_view(module)
                pair = self._pair(doc["learner"], module, statement)
                plan.folds.setdefault(pair, []).append(statement)
                if pair[3] is not None:
                    result.triggers.setdefault((pair[0], pair[1], pair[3]), []).append(statement)
        if flush:
            yield from lookup.flush()

    def _apply_work(
        self,
        store: str,
        plan: _Plan,
        pairs: list[Pair],
        lookup: _RoundCatalogue,
        result: Round,
        *,
        recheck: bool,
    ) -> Work[None]:
        """Fold each pair's statements into its record (or recompute it) and write it."""
        planned = yield from self._fold_work(store, plan, pairs, lookup, recheck=recheck)
        yield from self._write(store, planned, lookup, result)

    def _fold_work(
        self,
        store: str,
        plan: _Plan,
        pairs: list[Pair],
        lookup: _RoundCatalogue,
        *,
        recheck: bool,
    ) -> Work[list[tuple[Pair, dict[str, Any], dict[str, Any] | None, bool]]]:
        """Each pair's new record (its statements folded into the one read, or recomputed),
        with the record read, where it changes: what `_write` writes."""
        plan.merge_views()
        records = yield from records_work(store, [record_key(*p) for p in pairs])
        folds = {pair: plan.folds[pair] for pair in pairs if pair in plan.folds}
        headers: dict[ModuleKey, Module] = {}  # discovered modules: their assessments only
        if recheck:
            yield from _drop_voided(store, folds)
        planned: list[tuple[Pair, dict[str, Any], dict[str, Any] | None, bool]] = []
        for pair in pairs:
            _, course_id, module_id, _ = pair
            module = plan.modules[(course_id, module_id)]
            record = records.get(record_key(*pair))
            facts: Facts | None = None
            known = stored_facts(record) if record is not None else {}
            if pair not in plan.recompute and known is not None:
                facts = Facts.from_doc(known)
                view = _pair_view(module, facts, folds.get(pair, []), headers)
                profile = self.profiles.get(module.profile)
                for statement in folds.get(pair, []):
                    facts = fold(view, profile, facts, statement)
                    if facts is None:
                        break
            fence = facts is None  # a recompute always moves the version (see `_write`)
            if facts is None:
                view = yield from lookup.complete(module)
                facts = yield from self._facts_from_statements(store, pair, view)
            new = self._record(store, pair, _view(view, facts), facts)
            if record is not None and not fence and not differs(record, new, _CONTENT):
                continue  # e.g. a statement folded before: nothing to write
            planned.append((pair, new, record, fence))
        return planned

    def _close_work(self, store: str, entries: list[str], result: Round) -> Work[None]:
        """The round's outbox entries are done; grown discovered modules are owed a
        re-summary (durable until it ran). The re-summary is owed before the entries go, so
        that where the two are separate writes (MongoDB) nobody sees nothing owed between
        them (`GET /ready`)."""
        for (course_id, module_id), total in result.grown.items():
            yield update_one(
                OUTBOX,
                {"_id": _resummary_id(store, course_id, module_id)},
                {
                    "$set": {
                        "kind": "resummarize",
                        "store": store,
                        "course": course_id,
                        "module": module_id,
                        "ids": [],
                        "count": 0,
                        "rev": total,
                        "stored_key": monotonic_now_micros(),
                    }
                },
                upsert=True,
            )
        if entries:
            yield delete_many(OUTBOX, {"_id": {"$in": sorted(set(entries))}})

    def _pair(self, learner: str, module: Module, statement: dict[str, Any]) -> Pair:
        return (learner, module.course_id, module.id, _registration(module, statement))

    def _record(self, store: str, pair: Pair, module: Module, facts: Facts) -> dict[str, Any]:
        learner, course_id, module_id, registration = pair
        fields = summarize(module, self.profiles.get(module.profile), facts)
        return {
            "store": store,
            "key": record_key(*pair),
            "learner": learner,
            "course": course_id,
            "module": module_id,
            # "" rather than null: records sort and page on it (public_record shows null)
            "registration": registration or "",
            **fields,
            "learner_name": learner_name(facts),
            "facts": facts.to_doc(),
        }

    def _facts_from_statements(self, store: str, pair: Pair, module: Module) -> Work[Facts]:
        learner, _, _, registration = pair
        docs = yield find(
            "statements",
            {
                "store": store,
                "voided": False,
                "terms": narrowing_term("agents", learner),
                "learner": learner,
                "related_activities": {"$in": module.activity_ids},
            },
            projection={"statement": 1},
        )
        statements = [parse_stored(doc["statement"]) for doc in docs]
        if registration is not None:
            statements = [s for s in statements if _registration(module, s) == registration]
        return derive_facts(module, self.profiles.get(module.profile), statements)

    def _write(
        self,
        store: str,
        planned: list[tuple[Pair, dict[str, Any], dict[str, Any] | None, bool]],
        lookup: _RoundCatalogue,
        result: Round,
    ) -> Work[None]:
        """Write the planned records, each against the version read. A recompute ("fence")
        always moves the version, even when it changes nothing visible: a slower writer that
        read the version before it (and statements since voided) must then fail its check
        instead of folding them back in. Writers that lost a race recompute (`_settle`)."""
        if not planned:
            return
        first = yield from seq_block_work(store, len(planned))
        inserts: list[tuple[Pair, dict[str, Any]]] = []
        conflicts: list[Pair] = []
        for number, (pair, new, record, _fence) in enumerate(planned):
            seq = first + number
            if record is None:
                inserts.append((pair, stamped(new, seq, 1)))
                continue
            written = yield from write_record_work(new, record, seq)
            if written is None:
                conflicts.append(pair)
            elif _visible_change(record, written):
                result.changed.append(written)
        refused = yield from insert_records_work([doc for _, doc in inserts])
        for position, (pair, doc) in enumerate(inserts):
            if position in refused:
                conflicts.append(pair)
            elif doc["status"] != "not_started":
                result.changed.append(doc)
        for pair in conflicts:
            written = yield from self._settle(store, pair, lookup)
            if written is not None:
                result.changed.append(written)

    def _settle(
        self, store: str, pair: Pair, lookup: _RoundCatalogue
    ) -> Work[dict[str, Any] | None]:
        """Recompute one record from the statements until its version check passes (only
        where writers are not serialised: MongoDB)."""
        learner, course_id, module_id, _ = pair
        for _ in range(_MAX_ATTEMPTS):
            # Read the version before the statements: a writer that read older statements
            # than ours must then fail its version check instead of overwriting us.
            current = yield find_one("progress", {"store": store, "key": record_key(*pair)})
            module = yield from lookup.module(course_id, module_id)
            if module is None:
                return None
            facts = yield from self._facts_from_statements(store, pair, module)
            new = self._record(store, pair, module, facts)
            seq = yield from seq_block_work(store, 1)
            written = yield from write_record_work(new, current, seq)
            if written is not None:
                visible = current is None or _visible_change(current, written)
                return written if visible and written["status"] != "not_started" else None
        raise VersionConflict(f"could not write progress for {learner} in {module_id}")

    # --- whole modules --------------------------------------------------------------------------

    def _module_work(self, store: str, module: Module) -> Work[Round]:
        """Every learner's record of one (complete) module, recomputed from the statements."""
        result = Round()
        records = {
            r["key"]: r
            for r in (yield from module_records_work(store, module.course_id, module.id))
        }
        docs = yield find(
            "statements",
            {
                "store": store,
                "voided": False,
                "terms": {"$in": [term("related_activities", a) for a in module.activity_ids]},
                "related_activities": {"$in": module.activity_ids},
            },
            projection={"statement": 1, "learner": 1},
        )
        grouped: dict[Pair, list[dict[str, Any]]] = {}
        for doc in docs:
            if doc.get("learner"):
                statement = parse_stored(doc["statement"])
                grouped.setdefault(self._pair(doc["learner"], module, statement), []).append(
                    statement
                )
        for record in records.values():
            pair = (
                record["learner"],
                record["course"],
                record["module"],
                record.get("registration") or None,
            )
            grouped.setdefault(pair, [])
        profile = self.profiles.get(module.profile)
        planned = []
        for pair in sorted(grouped, key=lambda p: (p[0], p[1], p[2], p[3] or "")):
            facts = derive_facts(module, profile, grouped[pair])
            new = self._record(store, pair, module, facts)
            planned.append((pair, new, records.get(record_key(*pair)), True))
        yield from self._write(
            store,
            planned,
            _RoundCatalogue(self.catalogue, store, result, self.profiles.get("generic")),
            result,
        )
        return result

    def _resummarize_work(self, store: str, course_id: str, module_id: str) -> Work[Round]:
        result = Round()
        lookup = _RoundCatalogue(self.catalogue, store, result, self.profiles.get("generic"))
        module = yield from lookup.header(course_id, module_id)
        entry_id = _resummary_id(store, course_id, module_id)
        entry = yield find_one(OUTBOX, {"_id": entry_id})
        if module is None or not module.discovered:
            yield delete_many(OUTBOX, {"_id": entry_id})
            return result
        total = module.item_total or 0
        planned = []
        for record in (yield from module_records_work(store, course_id, module_id)):
            known = stored_facts(record)
            if known is None:
                continue  # from an earlier version: recomputed when its learner is next seen
            facts = Facts.from_doc(known)
            new = {
                **record,
                **summarize(_view(module, facts), self.profiles.get(module.profile), facts),
            }
            if differs(record, new, PROGRESS_FIELDS):
                pair = (record["learner"], course_id, module_id, record.get("registration") or None)
                planned.append((pair, new, record, False))
        yield from self._write(store, planned, lookup, result)
        if entry is not None:
            # Only if the module did not grow again meanwhile (a later round set a larger rev).
            yield delete_many(OUTBOX, {"_id": entry_id, "rev": {"$lte": total}})
        return result

    async def _satisfied(self, store: str, result: Round) -> None:
        """cmi5 9.3.9, the LMS's side: when a block or the course becomes satisfied for a
        registration, store one `satisfied` statement for it. Its id derives from the
        registration and the unit, so it is stored once whatever re-derivation happens; a
        unit that is unsatisfied again (a voided pass) keeps the statement (see
        docs/progress-rules.md)."""
        if self.emit is None:
            return
        groups = result.completed | _completed_groups(result.changed)
        courses: dict[str, Any] = {}
        for learner, course_id, registration in sorted(groups):
            if course_id not in courses:
                courses[course_id] = await self.catalogue.get(store, course_id)
            course = courses[course_id]
            if course is None or not course.emit_satisfied:
                continue
            records = await self.progress.find(
                store,
                learner=learner,
                course=course_id,
                registration=registration,
                limit=10_000,
                include_not_started=True,
            )
            satisfied = satisfied_units(course, {r["module"]: r for r in records})
            if not satisfied:
                continue
            round_statements = result.triggers.get((learner, course_id, registration), [])
            actor = next((s["actor"] for s in round_statements), None) or agent_from_key(learner)
            if actor is None:
                continue
            unit_of = {unit.id: unit for unit in units(course)}
            statements = []
            for unit_id, moment in sorted(satisfied.items()):
                if unit_id not in unit_of:
                    continue
                trigger = _trigger(round_statements, moment)
                session = session_of(trigger) if trigger else None
                statements.append(
                    satisfied_statement(
                        unit_of[unit_id], registration, moment, session, self.own_authority, actor
                    )
                )
            try:
                await self.emit(store, statements)
            except Exception:  # the progress is derived; the statements follow next time
                log.exception("could not store satisfied statements for %s", registration)

    async def _publish(self, store: str, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        events = [{"id": event_id(r), "record": public_record(r)} for r in records]
        try:
            await self.bus.publish_many(store, events)
        except Exception as exc:  # the records are stored; SSE clients catch up on reconnect
            log.warning("could not publish %d progress events: %s", len(events), exc)


class _RoundCatalogue:
    """The catalogue as one unit of derivation sees it: modules looked up (and discovered)
    once per statement context, course documents read once.

    The most common discovery, a new content item of a discovered module that exists already,
    is not written at once: `modules` adds it to what the round has read (`reads`), as the
    write would, and `flush` writes the items waiting, one insert and one count per module.
    One at a time, each such item cost about ten reads and two writes, most of a discovered
    module's derivation. Every other discovery writes the waiting items first and then its
    own, so the statements still change the catalogue one after the other, in order."""

    def __init__(
        self, catalogue: CatalogueRepository, store: str, result: Round, profile: Profile
    ) -> None:
        self.catalogue = catalogue
        self.store = store
        self.result = result
        self.profile = profile  # the profile discovered modules follow
        self.by_context: dict[tuple[Any, ...], list[Module]] = {}
        self.reads = CatalogueReads()
        self.expected: set[str] = set()  # ids the unit will ask about (`expect`)
        self._known: dict[str, Known] = {}  # what the catalogue knows of the ids `_asked`
        self._asked: set[str] = set()
        self._looks = 0  # reads of what is known in this unit
        self._waiting: dict[tuple[str, str], list[str]] = {}  # new items not written yet

    def modules(self, statement: dict[str, Any], discover: bool) -> Work[list[Module]]:
        """The modules the statement touches (lrs.progress.linking), after applying what it
        discovers when no definition covers it (lrs.progress.discovery)."""
        linked = linked_ids(statement)
        role = role_of(self.profile, statement) if discover else None
        context = (tuple(linked), discover, role)
        if context in self.by_context:
            return self.by_context[context]
        found = yield from self.catalogue.modules_for_work(self.store, linked, self.reads)
        found = [m for m in found if any(m.has_activity(a) for a in linked)]  # linking.touches
        if discover and not self._settled(found, statement, role):
            known = yield from self._known_of(linked)
            discovered = discovery(statement, self.profile, known)
            if discovered is not None:
                if discovered.role == "content" and (
                    yield from self._joins_discovered_module(discovered, known)
                ):
                    yield from self._add_later(discovered)
                    changed = True
                else:
                    yield from self.flush()
                    grew, role_changed = yield from self.catalogue.discover_work(
                        self.store, discovered
                    )
                    yield from self._known_again(discovered)
                    changed = grew is not None or role_changed
                    if changed:
                        self.reads.forget(discovered.course_id)
                if changed:
                    key = (discovered.course_id, discovered.module_id)
                    total = yield from self.catalogue.item_total_work(self.store, *key, self.reads)
                    self.result.grown[key] = total
                    found = yield from self.catalogue.modules_for_work(
                        self.store, linked, self.reads
                    )
                    found = [m for m in found if any(m.has_activity(a) for a in linked)]
        self.by_context[context] = found
        return found

    def _known_of(self, linked: list[str]) -> Work[dict[str, Known]]:
        """What the catalogue knows of these ids. The first looks of a unit read their own
        ids; from `_KNOWN_ALL_AFTER` looks on (a unit that discovers a lot) one read takes
        every id the unit expects."""
        if not self._asked.issuperset(linked):
            self._looks += 1
            wanted = set(linked)
            if self._looks >= _KNOWN_ALL_AFTER:
                wanted |= self.expected
            ids = sorted(wanted - self._asked)
            self._known.update((yield from self.catalogue.known_work(self.store, ids)))
            self._asked.update(ids)
        return self._known

    def _known_again(self, found: Discovery) -> Work[None]:
        """After a discovery: it changes what is known of its course, module and item only
        (never makes anything defined)."""
        ids = sorted({found.course_id, found.module_id, found.item_id})
        for activity in ids:
            self._known.pop(activity, None)
        self._known.update((yield from self.catalogue.known_work(self.store, ids)))
        self._asked.update(ids)

    def expect(self, activity_ids: list[str]) -> None:
        """The ids a unit of work's statements name (see `_known_of`)."""
        self.expected = set(activity_ids)
        self._known, self._asked, self._looks = {}, set(), 0

    def _add_later(self, found: Discovery) -> Work[None]:
        """The new content item as if written: its row and the module's count in `reads`."""
        key = (found.course_id, found.module_id)
        total = yield from self.catalogue.item_total_work(self.store, *key, self.reads)
        row = {
            "store": self.store,
            "activity": found.item_id,
            "course": found.course_id,
            "module": found.module_id,
        }
        self.reads.rows.setdefault(found.item_id, []).append(row)
        self.reads.totals[key] = total + 1
        self._known[found.item_id] = "item"
        self._waiting.setdefault(key, []).append(found.item_id)

    def flush(self) -> Work[None]:
        """Write the new content items waiting (at the end of each unit of work, and before
        any other discovery)."""
        waiting, self._waiting = self._waiting, {}
        for (course_id, module_id), items in waiting.items():
            total = yield from self.catalogue.add_content_items_work(
                self.store, course_id, module_id, items
            )
            self.reads.totals[(course_id, module_id)] = total
            self.result.grown[(course_id, module_id)] = total

    def _joins_discovered_module(self, found: Discovery, known: dict[str, Known]) -> Work[bool]:
        """Whether the discovery only adds a new item to a discovered module that exists."""
        if known.get(found.item_id) is not None:
            return False
        doc = yield from self.catalogue.course_doc_work(self.store, found.course_id, self.reads)
        if doc is None or not doc.get("discovered"):
            return False
        return any(m["id"] == found.module_id for m in doc.get("modules", []))

    @staticmethod
    def _settled(found: list[Module], statement: dict[str, Any], role: str | None) -> bool:
        """Nothing to discover for sure: a defined course covers the statement, or its object
        is already an item of a discovered module it touches, in a role at least as high."""
        if any(not m.discovered for m in found):
            return True
        target = object_id(statement)
        for module in found:
            item = module.item(target) if target else None
            if item is not None and (role != "assessment" or item.role == "assessment"):
                return True
        return False

    def header(self, course_id: str, module_id: str) -> Work[Module | None]:
        """One module as its course document has it: complete when defined; when discovered,
        its assessments only, with its item count (see `_view`)."""
        doc = yield from self.catalogue.course_doc_work(self.store, course_id, self.reads)
        module_doc = next((m for m in (doc or {}).get("modules", []) if m["id"] == module_id), None)
        if module_doc is None:
            return None
        module = module_from_doc(module_doc)
        if not module.discovered:
            return module
        total = yield from self.catalogue.item_total_work(
            self.store, course_id, module_id, self.reads
        )
        return with_items(module, (), total)

    def module(self, course_id: str, module_id: str) -> Work[Module | None]:
        """One module, complete (all items of a discovered one)."""
        module = yield from self.header(course_id, module_id)
        if module is None:
            return None
        return (yield from self.complete(module))

    def complete(self, module: Module) -> Work[Module]:
        if not module.discovered:
            return module
        rows = yield find(
            "course_activities",
            {"store": self.store, "course": module.course_id, "module": module.id},
            projection={"activity": 1},
        )
        total = yield from self.catalogue.item_total_work(
            self.store, module.course_id, module.id, self.reads
        )
        members = {row["activity"] for row in rows} - {module.id}
        return with_items(module, members, total)


def _parsed(doc: dict[str, Any]) -> dict[str, Any]:
    """The statement of a stored document, parsed once however often it is asked for."""
    if "_parsed" not in doc:
        doc["_parsed"] = parse_stored(doc["statement"])
    return doc["_parsed"]


def _drop_voided(store: str, folds: dict[Pair, list[dict[str, Any]]]) -> Work[None]:
    """Take the statements that were voided since they were read out of `folds`."""
    ids = sorted({s["id"] for statements in folds.values() for s in statements})
    if not ids:
        return
    # Asked of the voiding statements (a few, in their own index), not of the round's
    # statements, which would each be read again.
    gone = yield from voided_by_visible(store, ids)
    if gone:
        for pair, statements in folds.items():
            folds[pair] = [s for s in statements if s["id"] not in gone]


def _trigger(statements: list[dict[str, Any]], moment: str) -> dict[str, Any] | None:
    """The statement that made a unit satisfied at `moment`: the latest one at that moment or
    before (None when none of these statements did: a recomputation)."""
    at = to_micros(parse_timestamp(moment))
    timed = [(statement_micros(s), s["id"], s) for s in statements]
    before = [t for t in timed if t[0] <= at]
    return max(before, key=lambda t: (t[0], t[1]))[2] if before else None


def _merged(views: list[Module]) -> Module:
    """Partial views of one discovered module (from different statements) as one: the last
    one's items (its assessments are the latest word on roles) and every other's, with the
    largest item count."""
    distinct = list({id(view): view for view in views}.values())
    last = distinct[-1]
    if len(distinct) == 1:
        return last  # the usual case: the statements of a round share their contexts
    total = max(view.item_total or 0 for view in distinct)
    items = {item.id for view in distinct for item in view.items}
    if total == last.item_total and len(items) == len(last.items):
        return last
    return with_items(last, items, total)


def _pair_view(
    module: Module,
    facts: Facts,
    statements: list[dict[str, Any]],
    headers: dict[ModuleKey, Module],
) -> Module:
    """A discovered module as one learner's fold and summary need it: its assessments, the
    items the learner has facts about and the items these statements touch. The items the
    round discovered through other learners' statements are left out (an item without facts
    counts for nothing), so that a pair costs what its own items cost, however many items the
    round or the module holds."""
    if not module.discovered or module.item_total is None:
        return module
    key = (module.course_id, module.id)
    if key not in headers:
        assessments = tuple(item for item in module.items if item.role == "assessment")
        headers[key] = replace(module, items=assessments)
    touched = {
        item.id
        for statement in statements
        for activity in linked_ids(statement)
        if (item := module.item(activity)) is not None
    }
    return with_items(headers[key], set(facts.items) | touched, module.item_total)


def _view(module: Module, facts: Facts) -> Module:
    """A discovered module as `summarize` needs it for these facts: its items the learner has
    facts about are in it (they are its items: facts are only kept for a module's items)."""
    if not module.discovered or module.item_total is None:
        return module
    missing = [item_id for item_id in facts.items if module.item(item_id) is None]
    if not missing:
        return module
    return with_items(module, [*(i.id for i in module.items), *missing], module.item_total)


def _unit_size(written: list[dict[str, Any]], size: int) -> int:
    """Pairs for a round's next unit, from the records its last unit wrote (`size` again when
    it wrote none): at most _APPLY_CHUNK, fewer where records hold many items."""
    if not written:
        return size
    items = sum(len(record.get("items") or ()) for record in written) / len(written)
    return max(1, min(_APPLY_CHUNK, int(_UNIT_ITEMS // max(items, 1.0))))


def _completed_groups(records: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """The (learner, course, registration) of each completed record kept per registration."""
    return {
        (r["learner"], r["course"], r["registration"])
        for r in records
        if r.get("registration") and r.get("status") == "completed"
    }


def _visible_change(stored: dict[str, Any], written: dict[str, Any]) -> bool:
    """Whether a write changed what the API shows of the record it wrote over."""
    return differs(stored, written, (*PROGRESS_FIELDS, "learner_name"))


def _resummary_id(store: str, course_id: str, module_id: str) -> str:
    return f"resummarize\x1f{store}\x1f{course_id}\x1f{module_id}"


def event_id(record: dict[str, Any]) -> str:
    """The SSE id of a record's current version: its number in the store's change sequence
    (`seq`); a record last changed before the sequence existed keeps its old, clock-based id."""
    seq = record.get("seq")
    return str(seq if seq is not None else record.get("updated_key", 0))


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    """A progress record as the API shows it. A record read with its item list as stored
    (`items_as_text`) shows that text as is, through `compact_json_bytes`."""
    shown = {k: v for k, v in record.items() if k not in _PUBLIC_HIDDEN}
    if isinstance(shown.get("items"), str):
        shown["items"] = JSONText(shown["items"])
    shown["registration"] = record.get("registration") or None
    # The SSE id of this version: a snapshot from GET /progress lines up with the stream.
    shown["event_id"] = event_id(record)
    return shown
