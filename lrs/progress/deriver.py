"""Applies the rules: from stored statements to progress records, with an optimistic version
check, then a live event per changed record (design notes sections 1, 5, 6).

Used by the Celery tasks in production and in-process in the embedded mode: the same code.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from lrs.events import EventBus
from lrs.progress.catalogue import Module
from lrs.progress.profiles import Profiles
from lrs.progress.rules import derive_facts, learner_name, summarize
from lrs.storage.progress import PROGRESS_FIELDS, CatalogueRepository, ProgressRepository
from lrs.storage.statements import StatementRepository, learner_key

log = logging.getLogger("lrs.progress")

_MAX_ATTEMPTS = 20


class VersionConflict(RuntimeError):
    pass


def _context_ids(statement: dict[str, Any], kind: str) -> list[str]:
    value = ((statement.get("context") or {}).get("contextActivities") or {}).get(kind) or []
    return [a["id"] for a in (value if isinstance(value, list) else [value]) if "id" in a]


def _object_id(statement: dict[str, Any]) -> str | None:
    obj = statement.get("object") or {}
    return obj.get("id") if obj.get("objectType", "Activity") == "Activity" else None


class Deriver:
    def __init__(
        self,
        statements: StatementRepository,
        catalogue: CatalogueRepository,
        progress: ProgressRepository,
        profiles: Profiles,
        bus: EventBus,
    ) -> None:
        self.statements = statements
        self.catalogue = catalogue
        self.progress = progress
        self.profiles = profiles
        self.bus = bus

    async def derive_statements(self, store: str, ids: list[str]) -> int:
        """Derive progress for every learner-module pair the statements touch, then mark them
        derived. Idempotent: running it twice, or for statements already derived, is harmless.
        Returns the number of records that changed."""
        docs = await self.statements.raw_statements(store, ids)
        pairs: dict[tuple[str, str, str], Module] = {}
        grown: dict[tuple[str, str], Module] = {}
        # Statements of one batch mostly share their activities: look each context up once.
        touched: dict[str, list[Module]] = {}
        for doc in docs:
            statement = json.loads(doc["statement"])
            affected = [statement]
            if doc.get("voids"):
                # Voiding retracts what the target contributed: re-derive the target's pairs.
                targets = await self.statements.raw_statements(store, [doc["voids"]])
                affected += [json.loads(t["statement"]) for t in targets]
            for subject in affected:
                learner = learner_key(subject)
                if learner is None:
                    continue
                context = _context_key(subject)
                if context not in touched:
                    modules, discovered = await self._modules_for(store, subject)
                    touched[context] = modules
                    for module in discovered:
                        grown[(module.course_id, module.id)] = module
                modules = touched[context]
                for module in modules:
                    pairs[(learner, module.course_id, module.id)] = module
        changed = 0
        for (learner, course_id, module_id), module in sorted(pairs.items(), key=lambda kv: kv[0]):
            if (course_id, module_id) in grown:
                continue  # derive_module below recomputes every learner of that module
            changed += await self.derive_pair(store, learner, module)
        for module in grown.values():
            # The discovered module's denominator grew: every learner's percent may change.
            changed += await self.derive_module(store, module)
        await self.statements.mark_derived(store, [doc["id"] for doc in docs])
        return changed

    async def _modules_for(
        self, store: str, statement: dict[str, Any]
    ) -> tuple[list[Module], list[Module]]:
        """The modules the statement touches, and those whose discovered content grew."""
        object_id = _object_id(statement)
        parents = _context_ids(statement, "parent") + _context_ids(statement, "grouping")
        candidates = ([object_id] if object_id else []) + parents
        modules = await self.catalogue.modules_for(store, candidates)
        modules = [m for m in modules if _touches_module(m, object_id, parents)]
        target = _discovery_target(statement, object_id)
        if target is None or any(not m.discovered for m in modules):
            return modules, []
        # Discovery (design notes 3.3): no definition covers this statement; its parent (or
        # cmi5 grouping) is taken as the module, the first other grouping as the course.
        course_id, module_id = target
        if not await self.catalogue.discover(store, course_id, module_id, object_id):
            return modules, []
        modules = [
            m
            for m in await self.catalogue.modules_for(store, candidates)
            if _touches_module(m, object_id, parents)
        ]
        return modules, [m for m in modules if m.discovered and m.id == module_id]

    async def derive_pair(self, store: str, learner: str, module: Module) -> int:
        """Recompute one record from the stored statements; 1 if it changed."""
        for _ in range(_MAX_ATTEMPTS):
            # Read the version before the statements: a writer that read older statements than
            # ours must then fail its version check instead of overwriting our newer result.
            current = await self.progress.get(store, learner, module.course_id, module.id)
            statements = await self.statements.learner_statements(
                store, learner, module.activity_ids
            )
            result = await self._settle(store, learner, module, current, statements)
            if result is not None:
                return result
        raise VersionConflict(f"could not write progress for {learner} in {module.id}")

    async def _settle(
        self,
        store: str,
        learner: str,
        module: Module,
        current: dict[str, Any] | None,
        statements: list[dict[str, Any]],
    ) -> int | None:
        """Write what the statements say over `current`: 1 if the record changed, 0 if not,
        None if another writer moved the version first (read again and retry)."""
        profile = self.profiles.get(module.profile)
        facts = derive_facts(module, profile, statements)
        fields = summarize(module, profile, facts)
        fields["learner_name"] = learner_name(facts)
        version = current["version"] if current else None
        unchanged = current is not None and all(
            current.get(name) == fields[name] for name in (*PROGRESS_FIELDS, "learner_name")
        )
        if unchanged or (current is None and fields["status"] == "not_started"):
            # Nothing to show, but the version must still move (a not_started record is
            # created for it): a slower worker that read older statements before ours
            # would otherwise pass the version check and overwrite this newer result.
            claimed = await self.progress.claim(
                store, learner, module.course_id, module.id, version, fields
            )
            return 0 if claimed else None
        record = await self.progress.write(
            store, learner, module.course_id, module.id, fields, version
        )
        if record is None:
            return None
        await self._publish(store, record)
        return 1

    async def derive_module(self, store: str, module: Module) -> int:
        """Recompute every learner's record of one module, reading the module's records and
        statements in one go each (in that order, as `derive_pair` does)."""
        records = {
            record["learner"]: record
            for record in await self.progress.module_records(store, module.course_id, module.id)
        }
        by_learner = await self.statements.statements_by_learner(store, module.activity_ids)
        changed = 0
        for learner in sorted(set(records) | set(by_learner)):
            result = await self._settle(
                store, learner, module, records.get(learner), by_learner.get(learner, [])
            )
            # Another writer got there first: redo this one learner from fresh reads.
            changed += (
                result if result is not None else await self.derive_pair(store, learner, module)
            )
        return changed

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

    async def _publish(self, store: str, record: dict[str, Any]) -> None:
        event = {"id": event_id(record), "record": public_record(record)}
        try:
            await self.bus.publish(store, event)
        except Exception as exc:  # the record is stored; SSE clients catch up on reconnect
            log.warning("could not publish progress event: %s", exc)


def _discovery_target(statement: dict[str, Any], object_id: str | None) -> tuple[str, str] | None:
    """(course, module) a statement would be discovered into, if any."""
    if object_id is None:
        return None
    parent = _context_ids(statement, "parent")
    grouping = _context_ids(statement, "grouping")
    module_id = (parent or grouping or [None])[0]
    if module_id is None or module_id == object_id:
        return None
    course_id = next((g for g in grouping if g != module_id), module_id)
    return course_id, module_id


def _touches_module(module: Module, object_id: str | None, parents: list[str]) -> bool:
    return (object_id in module.activity_ids) or module.id in parents


def event_id(record: dict[str, Any]) -> str:
    """The SSE id of a record's current version: its number in the store's change sequence
    (`seq`); a record last changed before the sequence existed keeps its old, clock-based id."""
    seq = record.get("seq")
    return str(seq if seq is not None else record.get("updated_key", 0))


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    """A progress record as the API shows it."""
    hidden = ("_id", "store", "updated_key", "seq")
    shown = {k: v for k, v in record.items() if k not in hidden}
    # The SSE id of this version: a snapshot from GET /progress lines up with the stream.
    shown["event_id"] = event_id(record)
    return shown


def _context_key(statement: dict[str, Any]) -> str:
    """What `_modules_for` looks at in a statement: its object and its context activities."""
    return json.dumps(
        [
            _object_id(statement),
            _context_ids(statement, "parent"),
            _context_ids(statement, "grouping"),
            _discovery_target(statement, _object_id(statement)),
        ]
    )
