"""The progress rules (design notes section 5), pure: no clock, no database.

Two steps, so that derivation can be incremental:

- **Facts**: what one learner's statements say about one module: per item, the first moment it
  was viewed, passed, waived, its attempts and best score; for the module, the first and last
  access, a waiver, the reset barrier. `fold(module, profile, facts, statement)` adds one
  statement. Folding is commutative and idempotent (minima, maxima, sets of statement ids), so
  the facts of a set of statements do not depend on arrival order, duplicates, or which worker
  folded what. Only a reset that moves the barrier cannot be folded (what came before it must
  be forgotten): `fold` then returns None and the caller recomputes from the statements.
- **Summary**: `summarize(module, profile, facts)` turns facts into the record's fields
  (status, percent, completed_at, ...). It reads the module's current item list, so a
  discovered module that grew is re-summarized from the stored facts, without its statements.

Facts about one item depend only on that item's own definition (role, mastery score), never on
the other items: a module that only gains items keeps every learner's facts valid. Any other
catalogue change (an item's role or mastery score) means recomputing from the statements.

`derive_progress(module, profile, statements)` is the whole thing in one call: the facts of
every statement, summarized.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lrs.progress.catalogue import Item, Module
from lrs.progress.profiles import Profile
from lrs.xapi.timestamps import format_timestamp, from_micros, parse_timestamp, to_micros

STATUSES = ("not_started", "started", "in_progress", "completed")

Micros = int  # a moment, in microseconds since the epoch (UTC)


def statement_micros(statement: dict[str, Any]) -> Micros:
    """When a statement happened: its timestamp (the LRS sets one when the client did not)."""
    return to_micros(parse_timestamp(statement.get("timestamp") or statement["stored"]))


def _object_id(statement: dict[str, Any]) -> str | None:
    obj = statement.get("object") or {}
    return obj.get("id") if obj.get("objectType", "Activity") == "Activity" else None


def touches(module: Module, statement: dict[str, Any]) -> bool:
    """A statement touches a module when its object is the module or one of its items, or its
    context names the module as parent or grouping."""
    if _object_id(statement) in module.activity_ids:
        return True
    activities = (statement.get("context") or {}).get("contextActivities") or {}
    for kind in ("parent", "grouping"):
        value = activities.get(kind) or []
        for activity in value if isinstance(value, list) else [value]:
            if isinstance(activity, dict) and activity.get("id") == module.id:
                return True
    return False


def _scaled(statement: dict[str, Any]) -> float | None:
    score = (statement.get("result") or {}).get("score") or {}
    value = score.get("scaled")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _earliest(*moments: Micros | None) -> Micros | None:
    present = [m for m in moments if m is not None]
    return min(present) if present else None


def _latest(*moments: Micros | None) -> Micros | None:
    present = [m for m in moments if m is not None]
    return max(present) if present else None


# --- facts ---------------------------------------------------------------------------------------


@dataclass
class ItemFacts:
    """What the statements say about one item of the module."""

    viewed: Micros | None = None  # first view
    passed: Micros | None = None  # first pass (at or above the mastery score)
    waived: Micros | None = None  # first waiver of the item
    attempts: set[str] = field(default_factory=set)  # ids of attempt statements (assessments)
    best_score: float | None = None  # best scaled score among attempts

    def merge(self, other: ItemFacts) -> None:
        self.viewed = _earliest(self.viewed, other.viewed)
        self.passed = _earliest(self.passed, other.passed)
        self.waived = _earliest(self.waived, other.waived)
        self.attempts |= other.attempts
        if other.best_score is not None:
            self.best_score = _latest_score(self.best_score, other.best_score)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name in ("viewed", "passed", "waived", "best_score"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        if self.attempts:
            doc["attempts"] = sorted(self.attempts)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ItemFacts:
        return cls(
            viewed=doc.get("viewed"),
            passed=doc.get("passed"),
            waived=doc.get("waived"),
            attempts=set(doc.get("attempts") or ()),
            best_score=doc.get("best_score"),
        )


def _latest_score(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)


@dataclass
class Facts:
    """What one learner's statements say about one module (see the module docstring)."""

    started: Micros | None = None  # first access after the reset barrier
    last: Micros | None = None  # last access
    waived: Micros | None = None  # the module itself waived
    reset: Micros | None = None  # statements at or before this moment count for nothing
    items: dict[str, ItemFacts] = field(default_factory=dict)
    # The learner's latest name (design: shown in dashboards): (moment, statement id, name).
    name: tuple[Micros, str, str] | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "items": {item_id: facts.to_doc() for item_id, facts in sorted(self.items.items())}
        }
        for name in ("started", "last", "waived", "reset"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        if self.name is not None:
            doc["name"] = list(self.name)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Facts:
        name = doc.get("name")
        return cls(
            started=doc.get("started"),
            last=doc.get("last"),
            waived=doc.get("waived"),
            reset=doc.get("reset"),
            items={k: ItemFacts.from_doc(v) for k, v in (doc.get("items") or {}).items()},
            name=(int(name[0]), str(name[1]), str(name[2])) if name else None,
        )


def fold(module: Module, profile: Profile, facts: Facts, statement: dict[str, Any]) -> Facts | None:
    """`facts` with one more (non-voided) statement of the learner added, in place; None when
    the statement cannot be folded (a reset that moves the barrier): recompute instead."""
    if not touches(module, statement):
        return facts
    verb = (statement.get("verb") or {}).get("id")
    if verb in profile.ignored_verbs:
        return facts
    moment = statement_micros(statement)
    target = _object_id(statement)
    actor_name = (statement.get("actor") or {}).get("name")
    if isinstance(actor_name, str):
        candidate = (moment, str(statement.get("id", "")), actor_name)
        if facts.name is None or candidate[:2] > facts.name[:2]:
            facts.name = candidate
    if profile.reset.matches(statement):
        if target != module.id or (facts.reset is not None and moment <= facts.reset):
            return facts  # a reset is never an access; one before the barrier changes nothing
        if facts.started is None:
            facts.reset = moment  # nothing to forget yet
            return facts
        return None
    if facts.reset is not None and moment <= facts.reset:
        return facts
    facts.started = _earliest(facts.started, moment)
    facts.last = _latest(facts.last, moment)
    if profile.waived.matches(statement):
        if target == module.id:
            facts.waived = _earliest(facts.waived, moment)
        elif (item := module.item(target) if target else None) is not None:
            _item_facts(facts, item).waived = _earliest(_item_facts(facts, item).waived, moment)
        return facts
    item = module.item(target) if isinstance(target, str) else None
    if item is None:
        return facts
    state = _item_facts(facts, item)
    if profile.viewed.matches(statement):
        state.viewed = _earliest(state.viewed, moment)
    scaled = _scaled(statement)
    if profile.attempted.matches(statement):
        if item.role == "assessment":
            state.attempts.add(str(statement.get("id", "")))
        if scaled is not None:
            state.best_score = _latest_score(state.best_score, scaled)
    meets_mastery = item.mastery_score is None or scaled is None or scaled >= item.mastery_score
    if profile.passed.matches(statement) and meets_mastery:
        state.passed = _earliest(state.passed, moment)
    return facts


def _item_facts(facts: Facts, item: Item) -> ItemFacts:
    state = facts.items.get(item.id)
    if state is None:
        state = facts.items[item.id] = ItemFacts()
    return state


def derive_facts(module: Module, profile: Profile, statements: list[dict[str, Any]]) -> Facts:
    """The facts of exactly these statements (every non-voided statement of one learner that
    may touch the module), whatever their order."""
    barrier = _reset_barrier(module, profile, statements)
    facts = Facts(reset=barrier)
    for statement in statements:
        folded = fold(module, profile, facts, statement)
        assert folded is not None  # the barrier is already the latest reset
    return facts


def _reset_barrier(
    module: Module, profile: Profile, statements: list[dict[str, Any]]
) -> Micros | None:
    resets = [
        statement_micros(s)
        for s in statements
        if profile.reset.matches(s)
        and _object_id(s) == module.id
        and touches(module, s)
        and (s.get("verb") or {}).get("id") not in profile.ignored_verbs
    ]
    return max(resets) if resets else None


# --- summary -------------------------------------------------------------------------------------


def _move_on_time(
    move_on: str, viewed: Micros | None, passed: Micros | None, started: Micros
) -> Micros | None:
    if move_on == "NotApplicable":
        return started
    if move_on == "Completed":
        return viewed
    if move_on == "Passed":
        return passed
    if move_on == "CompletedOrPassed":
        return _earliest(viewed, passed)
    # CompletedAndPassed
    return max(viewed, passed) if viewed is not None and passed is not None else None


def _satisfied_at(item: Item, facts: ItemFacts | None, started: Micros) -> Micros | None:
    facts = facts or ItemFacts()
    natural = _move_on_time(item.move_on, facts.viewed, facts.passed, started)
    return _earliest(natural, facts.waived)


def _group_time(
    items: list[Item], total: int, satisfied: dict[str, Micros | None], started: Micros
) -> Micros | None:
    """When every item of the group (`total` items, of which `items` are known) was satisfied;
    an empty group is satisfied on access."""
    times = [t for item in items if (t := satisfied[item.id]) is not None]
    if len(times) < total:
        return None
    return max([started, *times])


def _rule_time(
    rule: str,
    content: tuple[list[Item], int],
    assessments: list[Item],
    satisfied: dict[str, Micros | None],
    started: Micros,
) -> Micros | None:
    if rule == "NotApplicable":
        return started
    content_items, content_total = content
    content_time = _group_time(content_items, content_total, satisfied, started)
    assessment_time = _group_time(assessments, len(assessments), satisfied, started)
    if rule == "Completed":
        return content_time
    if rule == "Passed":
        return assessment_time
    if rule == "CompletedOrPassed":
        candidates = []
        if content_total:
            candidates.append(content_time)
        if assessments:
            candidates.append(assessment_time)
        return _earliest(*candidates) if candidates else started
    # CompletedAndPassed, the product's default
    if content_time is None or assessment_time is None:
        return None
    return max(content_time, assessment_time)


def _stamp(moment: Micros | None) -> str | None:
    return format_timestamp(from_micros(moment)) if moment is not None else None


def summarize(module: Module, profile: Profile, facts: Facts) -> dict[str, Any]:
    """The progress fields of one learner in one module, from the facts."""
    content = [item for item in module.items if item.role == "content"]
    assessments = [item for item in module.items if item.role == "assessment"]
    item_total = len(module.items) if module.item_total is None else module.item_total
    content_total = item_total - len(assessments)
    if facts.started is None or facts.last is None:
        return _empty(module, content_total)
    started = facts.started
    items = facts.items
    satisfied = {item.id: _satisfied_at(item, items.get(item.id), started) for item in module.items}
    completed_at = _earliest(
        _rule_time(module.rule, (content, content_total), assessments, satisfied, started),
        facts.waived,
    )

    viewed_ids = sorted(
        item.id for item in content if item.id in items and items[item.id].viewed is not None
    )
    attempts = sum(len(items[i.id].attempts) for i in assessments if i.id in items)
    scores = [
        items[i.id].best_score
        for i in assessments
        if i.id in items and items[i.id].best_score is not None
    ]
    passed_times = [items[i.id].passed if i.id in items else None for i in assessments]
    passed = bool(assessments) and all(t is not None for t in passed_times)
    passed_at = max(passed_times) if passed else None  # type: ignore[type-var]

    # in_progress (design 5): a required content item viewed or the assessment attempted;
    # a waived item, or a view of an assessment whose moveOn asks for completion, count too.
    any_progress = (
        bool(viewed_ids)
        or attempts > 0
        or any(f.waived is not None for i, f in items.items() if module.item(i))
        or any(
            i.id in items and items[i.id].viewed is not None and "Completed" in i.move_on
            for i in assessments
        )
    )
    if completed_at is not None:
        status, percent = "completed", 100
    else:
        status = "in_progress" if any_progress else "started"
        done = sum(1 for at in satisfied.values() if at is not None)
        percent = min(99, (100 * done) // item_total) if item_total else 0
    return {
        "status": status,
        "started_at": _stamp(started),
        "last_activity_at": _stamp(facts.last),
        "completed_at": _stamp(completed_at),
        "viewed": len(viewed_ids),
        "required": content_total,
        "viewed_ids": viewed_ids,
        "attempts": attempts,
        "best_score": max(scores) if scores else None,  # type: ignore[type-var]
        "passed": passed,
        "passed_at": _stamp(passed_at),
        "waived": facts.waived is not None,
        "percent": percent,
        "discovered": module.discovered,
    }


def learner_name(facts: Facts) -> str | None:
    """The name the learner's latest named statement gave."""
    return facts.name[2] if facts.name else None


def derive_progress(
    module: Module, profile: Profile, statements: list[dict[str, Any]]
) -> dict[str, Any]:
    """The progress fields of one learner in one module, from all their statements."""
    return summarize(module, profile, derive_facts(module, profile, statements))


def _empty(module: Module, content_total: int) -> dict[str, Any]:
    return {
        "status": "not_started",
        "started_at": None,
        "last_activity_at": None,
        "completed_at": None,
        "viewed": 0,
        "required": content_total,
        "viewed_ids": [],
        "attempts": 0,
        "best_score": None,
        "passed": False,
        "passed_at": None,
        "waived": False,
        "percent": 0,
        "discovered": module.discovered,
    }
