"""The progress rules (design notes section 5), pure: no clock, no database.

Two steps, so that derivation can be incremental:

- **Facts**: what one learner's statements say about one module: per item, the first moment it
  was accessed, viewed, passed, failed, waived, its attempts and best score; the same about the
  module's own activity (a discovered module's content can say "completed" or "passed" on the
  module itself); for the module, the first and last access, a waiver, the reset barrier.
  `fold(module, profile, facts, statement)` adds one statement. Folding is commutative and
  idempotent (minima, maxima, sets of statement ids), so the facts of a set of statements do
  not depend on arrival order, duplicates, or which worker folded what. Only a reset that moves
  the barrier cannot be folded (what came before it must be forgotten): `fold` then returns
  None and the caller recomputes from the statements.
- **Summary**: `summarize(module, profile, facts)` turns facts into the record's fields
  (status, percent, completed_at, the per-item list, ...). It reads the module's current item
  list and roles, so a discovered module that grew, or whose item became its assessment, is
  re-summarized from the stored facts, without its statements.

Facts about one item depend only on that item's own definition (its id, launch ids and mastery
score), never on the other items nor on its role or moveOn: a module that only gains items, or
whose discovered item becomes the assessment, keeps every learner's facts valid. A change of an
item's mastery score or launch ids means recomputing from the statements.

Which statement is about which module and item: lrs.progress.linking (object, parents,
groupings; cmi5 launch activity ids and publisher ids). Which statement gives which signal: the
module's profile (lrs.progress.profiles): e.g. for cmi5, only cmi5 defined statements (with
the cmi5 category) give signals, "allowed" ones count as an access only.

**Registrations.** The rules know nothing of registrations: they derive from the statements
they are given. For a course whose source is cmi5, progress belongs to a registration (an
enrollment, cmi5 3.0): the engine keeps one record per (learner, course, module,
registration) and passes the statements of that one registration (`context.registration`);
a statement without a registration counts for none of them. Generic content keeps one record
per (learner, course, module), from all the learner's statements whatever their registration.

`derive_progress(module, profile, statements)` is the whole thing in one call: the facts of
every statement, summarized.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lrs.progress.catalogue import Item, Module
from lrs.progress.linking import item_for, object_id, touches
from lrs.progress.profiles import Profile
from lrs.xapi.timestamps import format_micros, parse_timestamp, to_micros

__all__ = [
    "STATUSES",
    "Facts",
    "ItemFacts",
    "derive_facts",
    "derive_progress",
    "fold",
    "learner_name",
    "statement_micros",
    "summarize",
    "touches",
]

STATUSES = ("not_started", "started", "in_progress", "completed")

Micros = int  # a moment, in microseconds since the epoch (UTC)


def statement_micros(statement: dict[str, Any]) -> Micros:
    """When a statement happened: its timestamp (the LRS sets one when the client did not)."""
    return to_micros(parse_timestamp(statement.get("timestamp") or statement["stored"]))


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

_MOMENTS = ("accessed", "viewed", "passed", "failed", "waived")


@dataclass
class ItemFacts:
    """What the statements say about one item of the module (or the module's own activity)."""

    accessed: Micros | None = None  # first statement about it
    viewed: Micros | None = None  # first view (completion)
    passed: Micros | None = None  # first pass (at or above the mastery score)
    failed: Micros | None = None  # first fail (below the mastery score)
    waived: Micros | None = None  # first waiver of the item
    attempts: set[str] = field(default_factory=set)  # ids of attempt statements
    best_score: float | None = None  # best scaled score among attempts

    def merge(self, other: ItemFacts) -> None:
        for name in _MOMENTS:
            setattr(self, name, _earliest(getattr(self, name), getattr(other, name)))
        self.attempts |= other.attempts
        if other.best_score is not None:
            self.best_score = _best(self.best_score, other.best_score)

    def empty(self) -> bool:
        return self == ItemFacts()

    # A record holds one of these per item the learner has facts about, and a derivation
    # round reads and writes the whole record: field by field, not by name lists, these two
    # took a third of the time (a learner with 300 items: 780 us a record, against 270).
    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.accessed is not None:
            doc["accessed"] = self.accessed
        if self.viewed is not None:
            doc["viewed"] = self.viewed
        if self.passed is not None:
            doc["passed"] = self.passed
        if self.failed is not None:
            doc["failed"] = self.failed
        if self.waived is not None:
            doc["waived"] = self.waived
        if self.best_score is not None:
            doc["best_score"] = self.best_score
        if self.attempts:
            doc["attempts"] = sorted(self.attempts)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ItemFacts:
        get = doc.get
        attempts = get("attempts")
        return cls(
            get("accessed"),
            get("viewed"),
            get("passed"),
            get("failed"),
            get("waived"),
            set(attempts) if attempts else set(),
            get("best_score"),
        )


def _best(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)


@dataclass
class Facts:
    """What one learner's statements say about one module (see the module docstring)."""

    started: Micros | None = None  # first access after the reset barrier
    last: Micros | None = None  # last access
    waived: Micros | None = None  # the module itself waived
    reset: Micros | None = None  # statements at or before this moment count for nothing
    items: dict[str, ItemFacts] = field(default_factory=dict)
    # Signals on the module's own activity (used for discovered modules: design notes 3.3).
    own: ItemFacts = field(default_factory=ItemFacts)
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
        if not self.own.empty():
            doc["module"] = self.own.to_doc()
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
            own=ItemFacts.from_doc(doc.get("module") or {}),
            name=(int(name[0]), str(name[1]), str(name[2])) if name else None,
        )


def fold(module: Module, profile: Profile, facts: Facts, statement: dict[str, Any]) -> Facts | None:
    """`facts` with one more (non-voided) statement of the learner added, in place; None when
    the statement cannot be folded (a reset that moves the barrier): recompute instead.

    A statement that touches the module is an access (unless its verb is ignored, or it is a
    reset), and an access of the item it is about (or of the module's own activity). A waiver
    of the module itself waives it. Beyond that, the statement gives signals only when the
    profile says it may (cmi5: the cmi5 category): about its item (or the module's own
    activity), a view, an attempt with its score, a pass or a fail judged against the mastery
    score, a waiver of the item."""
    if not touches(module, statement):
        return facts
    verb = (statement.get("verb") or {}).get("id")
    if verb in profile.ignored_verbs:
        return facts
    moment = statement_micros(statement)
    target = object_id(statement)
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
    if target == module.id and profile.waived.matches(statement):
        # A waiver of the whole module is this product's (an instructor's) action, recorded
        # by the progress API: it counts whatever the profile's defined category.
        facts.waived = _earliest(facts.waived, moment)
        return facts
    item = item_for(module, profile, statement)
    if item is not None:
        state = _item_facts(facts, item)
    elif target == module.id:
        state = facts.own
    else:
        return facts
    state.accessed = _earliest(state.accessed, moment)
    if profile.is_defined(statement):  # else e.g. cmi5 "allowed": an access only (cmi5 7.1.3)
        _fold_signals(profile, item, state, statement, moment)
    return facts


def _fold_signals(
    profile: Profile,
    item: Item | None,
    state: ItemFacts,
    statement: dict[str, Any],
    moment: Micros,
) -> None:
    """The signals of one statement about one item (`item` None: the module's own activity)."""
    if profile.waived.matches(statement):
        state.waived = _earliest(state.waived, moment)
        return
    viewed = profile.viewed if item is not None else profile.module_completed
    if viewed.matches(statement):
        state.viewed = _earliest(state.viewed, moment)
    scaled = _scaled(statement)
    if profile.attempted.matches(statement):
        state.attempts.add(str(statement.get("id", "")))
        if scaled is not None:
            state.best_score = _best(state.best_score, scaled)
    # cmi5 9.3.4/9.3.5: a pass below the mastery score, or a fail at or above it, contradicts
    # the score: the LMS must reject or void it (cmi5 6.3), so it judges nothing here.
    mastery = profile.mastery_of(statement, item.mastery_score if item is not None else None)
    below = mastery is not None and scaled is not None and scaled < mastery
    if profile.passed.matches(statement) and not below:
        state.passed = _earliest(state.passed, moment)
    above = mastery is not None and scaled is not None and scaled >= mastery
    if profile.failed.matches(statement) and not above:
        state.failed = _earliest(state.failed, moment)


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
        and object_id(s) == module.id
        and touches(module, s)
        and (s.get("verb") or {}).get("id") not in profile.ignored_verbs
    ]
    return max(resets) if resets else None


# --- summary -------------------------------------------------------------------------------------


def _move_on_time(
    move_on: str, viewed: Micros | None, passed: Micros | None, started: Micros
) -> Micros | None:
    """When an item's moveOn (cmi5 13.1.4) was first met."""
    if move_on == "NotApplicable":
        return started  # "the LMS will consider the AU satisfied": from the first access on
    if move_on == "Completed":
        return viewed
    if move_on == "Passed":
        return passed
    if move_on == "CompletedOrPassed":
        return _earliest(viewed, passed)
    # CompletedAndPassed
    return max(viewed, passed) if viewed is not None and passed is not None else None


def _satisfied_at(item: Item, facts: ItemFacts | None, started: Micros) -> Micros | None:
    """When the item was satisfied: its moveOn met, or the item waived (cmi5 9.3.7)."""
    if facts is None:
        return _move_on_time(item.move_on, None, None, started)
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
    content: tuple[Micros | None, bool],
    assessment: tuple[Micros | None, bool],
    started: Micros,
) -> Micros | None:
    """When the module's rule was first met, from when each part was done (and whether the
    module has that part at all: a missing part drops out of the rule)."""
    if rule == "NotApplicable":
        return started
    content_time, has_content = content
    assessment_time, has_assessment = assessment
    if not has_content:
        content_time = started
    if not has_assessment:
        assessment_time = started
    if rule == "Completed":
        return content_time
    if rule == "Passed":
        return assessment_time
    if rule == "CompletedOrPassed":
        candidates = []
        if has_content:
            candidates.append(content_time)
        if has_assessment:
            candidates.append(assessment_time)
        return _earliest(*candidates) if candidates else started
    # CompletedAndPassed, the product's default
    if content_time is None or assessment_time is None:
        return None
    return max(content_time, assessment_time)


def _stamp(moment: Micros | None) -> str | None:
    return format_micros(moment) if moment is not None else None


def summarize(module: Module, profile: Profile, facts: Facts) -> dict[str, Any]:
    """The progress fields of one learner in one module, from the facts.

    Besides the module's fields, `items` lists per item its role, moveOn, status and the
    moment each signal first held (`item_status`): every item of a defined module, in the
    catalogue's order; for a discovered module (whose items may be many), the items the
    learner has facts about and its assessments, by id; `items_total` and `items_satisfied`
    count them all.

    A discovered module also listens to its own activity (design notes 3.3): a `completed`
    on it (the profile's `module_completed`) means its content is done, a pass on it means
    its assessment is passed, and attempts on it are assessment attempts."""
    content = [item for item in module.items if item.role == "content"]
    assessments = [item for item in module.items if item.role == "assessment"]
    item_total = len(module.items) if module.item_total is None else module.item_total
    content_total = item_total - len(assessments)
    if facts.started is None or facts.last is None:
        return _empty(module, content_total, item_total)
    started = facts.started
    items = facts.items
    own = facts.own if module.discovered else ItemFacts()
    satisfied = {item.id: _satisfied_at(item, items.get(item.id), started) for item in module.items}

    content_time = _group_time(content, content_total, satisfied, started)
    if own.viewed is not None:
        content_time = _earliest(content_time, max(started, own.viewed))
    passed_times = [items[i.id].passed if i.id in items else None for i in assessments]
    all_passed = bool(assessments) and all(t is not None for t in passed_times)
    assessment_time = _group_time(assessments, len(assessments), satisfied, started)
    if own.passed is not None:
        assessment_time = _earliest(assessment_time, max(started, own.passed))
    completed_at = _earliest(
        _rule_time(
            module.rule,
            (content_time, content_total > 0),
            (assessment_time, bool(assessments)),
            started,
        ),
        facts.waived,
    )

    viewed_ids = sorted(
        item.id for item in content if item.id in items and items[item.id].viewed is not None
    )
    attempts = len(own.attempts) + sum(
        len(items[i.id].attempts) for i in assessments if i.id in items
    )
    scores = [
        s
        for s in [own.best_score, *(items[i.id].best_score for i in assessments if i.id in items)]
        if s is not None
    ]
    passed_at = _earliest(
        max(passed_times) if all_passed else None,  # type: ignore[type-var]
        own.passed,
    )

    # in_progress (design 5): a required content item viewed or the assessment attempted;
    # a waived item, or a view of an assessment whose moveOn asks for completion, count too.
    any_progress = (
        bool(viewed_ids)
        or attempts > 0
        or own.viewed is not None
        or any(f.waived is not None for i, f in items.items() if module.item(i))
        or any(
            i.id in items and items[i.id].viewed is not None and "Completed" in i.move_on
            for i in assessments
        )
    )
    done = sum(1 for at in satisfied.values() if at is not None)
    if completed_at is not None:
        status, percent = "completed", 100
    else:
        status = "in_progress" if any_progress else "started"
        counted = done
        if own.viewed is not None:  # the module's own completion: every content item done
            counted += content_total - sum(1 for i in content if satisfied[i.id] is not None)
        if own.passed is not None:
            counted += sum(1 for i in assessments if satisfied[i.id] is None)
        percent = min(99, (100 * counted) // item_total) if item_total else 0
    return {
        "status": status,
        "started_at": _stamp(started),
        "last_activity_at": _stamp(facts.last),
        "completed_at": _stamp(completed_at),
        "viewed": len(viewed_ids),
        "required": content_total,
        "viewed_ids": viewed_ids,
        "attempts": attempts,
        "best_score": max(scores) if scores else None,
        "passed": passed_at is not None,
        "passed_at": _stamp(passed_at),
        "waived": facts.waived is not None,
        "waived_at": _stamp(facts.waived),
        "percent": percent,
        "discovered": module.discovered,
        "items": [
            item_status(item, items.get(item.id), satisfied[item.id])
            for item in _listed(module, facts)
        ],
        "items_total": item_total,
        "items_satisfied": done,
    }


def _listed(module: Module, facts: Facts) -> list[Item]:
    if not module.discovered:
        return list(module.items)
    shown = [i for i in module.items if i.id in facts.items or i.role == "assessment"]
    return sorted(shown, key=lambda item: item.id)


# An item no statement is about, as `item_status` lists it after its id, role and moveOn.
_UNTOUCHED: dict[str, Any] = {
    "status": "not_started",
    "accessed_at": None,
    "viewed_at": None,
    "passed_at": None,
    "failed_at": None,
    "attempts": 0,
    "best_score": None,
    "satisfied": False,
    "satisfied_at": None,
    "waived": False,
    "waived_at": None,
}


def item_status(item: Item, facts: ItemFacts | None, satisfied: Micros | None) -> dict[str, Any]:
    """One entry of a record's `items`: `status` is `completed` once the item is satisfied
    (its moveOn met, or waived), `in_progress` once viewed, attempted, passed, failed or
    waived, `started` once a statement is about it, else `not_started`."""
    if facts is None and satisfied is None:
        # Most of a module's items, for most learners: the same entry but for the item.
        return {"id": item.id, "role": item.role, "move_on": item.move_on, **_UNTOUCHED}
    facts = facts or ItemFacts()
    if satisfied is not None:
        status = "completed"
    elif (
        facts.viewed is not None
        or facts.attempts
        or facts.passed is not None
        or facts.failed is not None
    ):
        status = "in_progress"
    elif facts.accessed is not None:
        status = "started"
    else:
        status = "not_started"
    return {
        "id": item.id,
        "role": item.role,
        "move_on": item.move_on,
        "status": status,
        "accessed_at": _stamp(facts.accessed),
        "viewed_at": _stamp(facts.viewed),
        "passed_at": _stamp(facts.passed),
        "failed_at": _stamp(facts.failed),
        "attempts": len(facts.attempts),
        "best_score": facts.best_score,
        "satisfied": satisfied is not None,
        "satisfied_at": _stamp(satisfied),
        "waived": facts.waived is not None,
        "waived_at": _stamp(facts.waived),
    }


def learner_name(facts: Facts) -> str | None:
    """The name the learner's latest named statement gave."""
    return facts.name[2] if facts.name else None


def derive_progress(
    module: Module, profile: Profile, statements: list[dict[str, Any]]
) -> dict[str, Any]:
    """The progress fields of one learner in one module, from all their statements."""
    return summarize(module, profile, derive_facts(module, profile, statements))


def _empty(module: Module, content_total: int, item_total: int) -> dict[str, Any]:
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
        "waived_at": None,
        "percent": 0,
        "discovered": module.discovered,
        "items": [item_status(item, None, None) for item in _listed(module, Facts())],
        "items_total": item_total,
        "items_satisfied": 0,
    }
