"""A deliberately naive reference implementation of the progress rules (design notes 2-5) for
the `generic` profile, written from the design notes alone, and (second half, issue 11) of
per-item status, cmi5 courses and discovered modules, written from issue 11 and the cmi5
specification: it shares no code with `lrs/progress/` so that the property tests compare two
independent readings.

Brute force over cleverness: to find when a module's rule first became true, it replays the
learner's statements in time order and re-evaluates the whole rule after every instant.

Points the design notes leave open, and how this reference reads them (the first four were
settled with the team):
- statement time is `timestamp` (every statement the tests send has one);
- a pass counts only if `result.score.scaled` is absent or at/above the mastery score;
- a module without content (or without assessment) has nothing to do for that part: the part
  drops out of the rule; a rule with no part left is met on first access;
- a `waived` statement on the module meets the rule at the waiver's time;
- a reset statement on the module makes every statement at or before it count for nothing; a
  reset is an instructor's action, not learner activity, so it is never an access itself;
- waivers of single items: see the second half (cmi5 `waived`, issue 11);
- `attempts` counts distinct statements about the assessment that are attempts (an attempt
  verb, or any result at all); `best_score` is the best scaled score among them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ADL = "http://adlnet.gov/expapi/verbs/"
VIEW_VERBS = frozenset({ADL + "completed", ADL + "experienced"})
ATTEMPT_VERBS = frozenset(
    {ADL + "attempted", ADL + "answered", ADL + "passed", ADL + "failed", ADL + "scored"}
)
PASS_VERB = ADL + "passed"
VOID_VERB = ADL + "voided"
WAIVE_VERB = "https://w3id.org/xapi/adl/verbs/waived"
RESET_VERB = "urn:x-lrs:verbs:reset"

# The fields the reference predicts; a stored record must agree on every one of them.
REFERENCE_FIELDS = (
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
)


@dataclass(frozen=True)
class RefModule:
    course: str
    id: str
    content: tuple[str, ...]
    assessment: str | None
    rule: str
    mastery: float | None

    @property
    def activities(self) -> frozenset[str]:
        ids = {self.id, *self.content}
        if self.assessment:
            ids.add(self.assessment)
        return frozenset(ids)


def modules_of(course_id: str, definition: dict[str, Any]) -> list[RefModule]:
    """The modules of a JSON course definition (the body of PUT /courses/{id})."""
    modules = []
    for m in definition["modules"]:
        rule = m.get("completion_rule", "default")
        modules.append(
            RefModule(
                course=course_id,
                id=m["id"],
                content=tuple(m.get("content", [])),
                assessment=m.get("assessment"),
                rule="CompletedAndPassed" if rule == "default" else rule,
                mastery=m.get("mastery_score"),
            )
        )
    return modules


def when(statement: dict[str, Any]) -> datetime:
    moment = datetime.fromisoformat(statement["timestamp"])
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def show(moment: datetime | None) -> str | None:
    """The API's timestamp form: UTC, microseconds, Z."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def learner_of(statement: dict[str, Any]) -> str | None:
    """Design 2: only an Agent actor has progress; a Group counts for none of its members."""
    actor = statement.get("actor") or {}
    if actor.get("objectType", "Agent") != "Agent":
        return None
    if "mbox" in actor:
        return "mbox:" + actor["mbox"]
    if "account" in actor:
        return f"account:{actor['account']['homePage']}|{actor['account']['name']}"
    return None


def _verb(statement: dict[str, Any]) -> str:
    return statement["verb"]["id"]


def _object_id(statement: dict[str, Any]) -> str | None:
    obj = statement.get("object") or {}
    return obj.get("id") if obj.get("objectType", "Activity") == "Activity" else None


def _is_voiding(statement: dict[str, Any]) -> bool:
    return _verb(statement) == VOID_VERB


def live_statements(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct statements that count: neither voiding nor voided (re-sent duplicates carry
    the same id and content, so the first copy stands for all)."""
    by_id: dict[str, dict[str, Any]] = {}
    for statement in statements:
        by_id.setdefault(statement["id"], statement)
    voided: set[str] = set()
    for statement in by_id.values():
        if _is_voiding(statement):
            target = by_id.get(statement["object"]["id"])
            # A voiding statement cannot be voided (xAPI Data 2.3.2); the API rejects that.
            if target is None or not _is_voiding(target):
                voided.add(statement["object"]["id"])
    return [s for s in by_id.values() if not _is_voiding(s) and s["id"] not in voided]


def _named(statement: dict[str, Any]) -> list[str]:
    """The activities a statement names: its object, its context parents and groupings (issue
    11: a statement whose context names an item of the module is about the module too)."""
    context = (statement.get("context") or {}).get("contextActivities") or {}
    named = [a.get("id") for kind in ("parent", "grouping") for a in context.get(kind, [])]
    return [_object_id(statement), *named]


def _touches(module: RefModule, statement: dict[str, Any]) -> bool:
    return any(activity in module.activities for activity in _named(statement))


def _result(statement: dict[str, Any]) -> dict[str, Any] | None:
    result = statement.get("result")
    return result if isinstance(result, dict) else None


def _scaled(statement: dict[str, Any]) -> float | None:
    return ((_result(statement) or {}).get("score") or {}).get("scaled")


def _is_view(statement: dict[str, Any]) -> bool:
    return _verb(statement) in VIEW_VERBS or (_result(statement) or {}).get("completion") is True


def _is_attempt(statement: dict[str, Any]) -> bool:
    return _verb(statement) in ATTEMPT_VERBS or _result(statement) is not None


def _is_pass(statement: dict[str, Any], mastery: float | None) -> bool:
    said_passed = _verb(statement) == PASS_VERB or (_result(statement) or {}).get("success") is True
    scaled = _scaled(statement)
    return said_passed and (mastery is None or scaled is None or scaled >= mastery)


def _is_waiver(module: RefModule, statement: dict[str, Any]) -> bool:
    return _verb(statement) == WAIVE_VERB and _object_id(statement) == module.id


def _viewed(module: RefModule, statements: list[dict[str, Any]]) -> set[str]:
    return {
        s["object"]["id"] for s in statements if _object_id(s) in module.content and _is_view(s)
    }


def _passes(module: RefModule, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        s
        for s in statements
        if module.assessment is not None
        and _object_id(s) == module.assessment
        and _is_pass(s, module.mastery)
    ]


def rule_met(module: RefModule, statements: list[dict[str, Any]]) -> bool:
    """Is the module's completion rule met by exactly these statements?"""
    if any(_is_waiver(module, s) for s in statements):
        return True
    parts: dict[str, bool] = {}
    if module.content:
        parts["Completed"] = _viewed(module, statements) == set(module.content)
    if module.assessment:
        parts["Passed"] = bool(_passes(module, statements))
    if module.rule == "NotApplicable":
        return True
    if module.rule == "Completed":
        return parts.get("Completed", True)
    if module.rule == "Passed":
        return parts.get("Passed", True)
    if module.rule == "CompletedOrPassed":
        return any(parts.values()) if parts else True
    return all(parts.values())  # CompletedAndPassed: all([]) is True, as wanted


def module_progress(
    module: RefModule, learner: str, statements: list[dict[str, Any]]
) -> dict[str, Any]:
    """The expected record of one learner in one module, from the live statements."""
    mine = [s for s in statements if learner_of(s) == learner and _touches(module, s)]
    resets = [when(s) for s in mine if _verb(s) == RESET_VERB and _object_id(s) == module.id]
    if resets:
        barrier = max(resets)
        mine = [s for s in mine if when(s) > barrier]
    mine = [s for s in mine if _verb(s) != RESET_VERB]
    if not mine:
        return empty_progress(module)

    moments = sorted({when(s) for s in mine})
    completed_at = None
    for moment in moments:  # brute force: the first instant at which the rule holds
        if rule_met(module, [s for s in mine if when(s) <= moment]):
            completed_at = moment
            break

    viewed = _viewed(module, mine)
    attempts = [
        s
        for s in mine
        if module.assessment is not None and _object_id(s) == module.assessment and _is_attempt(s)
    ]
    scores = [_scaled(s) for s in attempts if _scaled(s) is not None]
    passes = _passes(module, mine)
    if completed_at is not None:
        status = "completed"
    elif viewed or attempts:
        status = "in_progress"
    else:
        status = "started"
    return {
        "status": status,
        "started_at": show(moments[0]),
        "last_activity_at": show(moments[-1]),
        "completed_at": show(completed_at),
        "viewed": len(viewed),
        "required": len(module.content),
        "viewed_ids": sorted(viewed),
        "attempts": len(attempts),
        "best_score": max(scores) if scores else None,
        "passed": bool(passes),
        "passed_at": show(min(when(s) for s in passes)) if passes else None,
        "waived": any(_is_waiver(module, s) for s in mine),
    }


def empty_progress(module: RefModule) -> dict[str, Any]:
    return {
        "status": "not_started",
        "started_at": None,
        "last_activity_at": None,
        "completed_at": None,
        "viewed": 0,
        "required": len(module.content),
        "viewed_ids": [],
        "attempts": 0,
        "best_score": None,
        "passed": False,
        "passed_at": None,
        "waived": False,
    }


def expected_progress(
    course_id: str, definition: dict[str, Any], statements: list[dict[str, Any]]
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(learner, course, module) -> expected fields, for every learner that sent a statement
    and every module of the course (not_started ones included)."""
    live = live_statements(statements)
    learners = sorted({k for s in statements if (k := learner_of(s)) is not None})
    return {
        (learner, course_id, module.id): module_progress(module, learner, live)
        for learner in learners
        for module in modules_of(course_id, definition)
    }


# --- issue 11: items, cmi5 courses, discovered modules ----------------------------------------
#
# Read from issue 11, design notes 3.3 and the cmi5 specification (sections cited inline), and
# again brute force: every "when did it first hold" is found by replaying the learner's
# statements instant by instant. What the reference takes from those texts:
# - a statement is about an item when its object is the item or a launch activity id the LMS
#   registered for it (cmi5 8.1, 9.4); in a cmi5 course, else when its grouping names the AU
#   (cmi5 9.6.2.3);
# - in a cmi5 course only statements with the cmi5 category give signals (cmi5 7.1.3, 9.6.2.1);
#   the others ("allowed") are accesses; `satisfied` is not counted at all (the LMS's own);
#   `completed` completes, `passed`/`failed` judge and are attempts, `waived` satisfies;
# - a pass below the mastery score and a fail at or above it judge nothing (cmi5 9.3.4, 9.3.5);
#   the mastery score is the one the statement carries in the cmi5 masteryscore extension
#   (cmi5 9.6.3.2: what the LMS gave the AU), else the course structure's;
# - an AU is satisfied by its moveOn (cmi5 13.1.4; NotApplicable: once the learner is in the
#   block), or a waiver; a block when all its AUs are; a course when all its blocks and AUs
#   are; a module record is `completed` when its outermost block is satisfied (or the module
#   is waived through the progress API);
# - a discovered module's item is its assessment when its definition type is the assessment
#   type or a statement discovering it judges it (passed/failed, or any result.success);
#   `completed` (or result.completion) on the module's own activity means its content is done,
#   a pass on it that its assessment is passed, and attempts on it are assessment attempts;
# - per item: status completed once satisfied, in_progress once viewed, attempted, passed or
#   failed, started once any statement is about it.

CMI5_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/cmi5"
CMI5_MASTERY = "https://w3id.org/xapi/cmi5/context/extensions/masteryscore"
CMI5_SESSION = "https://w3id.org/xapi/cmi5/context/extensions/sessionid"
SATISFIED_VERB = "https://w3id.org/xapi/adl/verbs/satisfied"
ASSESSMENT_TYPE = "http://adlnet.gov/expapi/activities/assessment"
FAIL_VERB = ADL + "failed"
COMPLETED_VERB = ADL + "completed"

# Fields the full prediction (`record`) adds to REFERENCE_FIELDS.
RECORD_FIELDS = (
    *REFERENCE_FIELDS,
    "percent",
    "waived_at",
    "items",
    "items_total",
    "items_satisfied",
)


@dataclass(frozen=True)
class RefItem:
    id: str
    role: str  # content or assessment
    move_on: str
    mastery: float | None = None
    launch_ids: tuple[str, ...] = ()
    blocks: tuple[str, ...] = ()  # the nested blocks that hold it, outermost first


@dataclass(frozen=True)
class RefPlan:
    """What the reference knows of one module: its items, its rule, what kind it is."""

    course: str
    id: str
    items: tuple[RefItem, ...]
    rule: str = "CompletedAndPassed"
    cmi5: bool = False
    discovered: bool = False
    blocks: tuple[str, ...] = ()  # nested blocks

    @property
    def activities(self) -> frozenset[str]:
        ids = {self.id, *self.blocks}
        for item in self.items:
            ids |= {item.id, *item.launch_ids}
        return frozenset(ids)


def plan_of(module: RefModule) -> RefPlan:
    """A JSON course definition's module as a plan: its pages must be viewed, its quiz passed."""
    items = [RefItem(page, "content", "Completed") for page in module.content]
    if module.assessment:
        items.append(RefItem(module.assessment, "assessment", "Passed", module.mastery))
    return RefPlan(module.course, module.id, tuple(items), module.rule)


def _context_list(statement: dict[str, Any], kind: str) -> list[str]:
    context = (statement.get("context") or {}).get("contextActivities") or {}
    return [a.get("id") for a in context.get(kind, [])]


def _defined(plan: RefPlan, statement: dict[str, Any]) -> bool:
    return not plan.cmi5 or CMI5_CATEGORY in _context_list(statement, "category")


def _about(plan: RefPlan, statement: dict[str, Any]) -> str | None:
    """The item (its id) the statement is about, "" for the module's own activity, or None."""
    target = _object_id(statement)
    for item in plan.items:
        if target == item.id:
            return item.id
    for item in plan.items:
        if target in item.launch_ids:
            return item.id
    if target == plan.id:
        return ""
    if plan.cmi5:
        for grouped in _context_list(statement, "grouping"):
            for item in plan.items:
                if grouped == item.id or grouped in item.launch_ids:
                    return item.id
    return None


def _mastery_for(plan: RefPlan, item: RefItem | None, statement: dict[str, Any]) -> float | None:
    if plan.cmi5:
        given = ((statement.get("context") or {}).get("extensions") or {}).get(CMI5_MASTERY)
        if isinstance(given, int | float) and not isinstance(given, bool) and 0 <= given <= 1:
            return given
    return item.mastery if item else None


def _signals(plan: RefPlan, statement: dict[str, Any]) -> set[str]:
    """What a statement says about what it is about: view, attempt, pass, fail, waive."""
    if not _defined(plan, statement):
        return set()
    verb = _verb(statement)
    result = _result(statement) or {}
    if verb == WAIVE_VERB:
        return {"waive"}
    about = _about(plan, statement)
    item = next((i for i in plan.items if i.id == about), None)
    scaled = _scaled(statement)
    mastery = _mastery_for(plan, item, statement)
    found: set[str] = set()
    if plan.cmi5:
        said_view = verb == COMPLETED_VERB
        said_attempt = verb in (PASS_VERB, FAIL_VERB)
        said_pass, said_fail = verb == PASS_VERB, verb == FAIL_VERB
    else:
        view_verbs = VIEW_VERBS if about else {COMPLETED_VERB}  # on the module: completed only
        said_view = verb in view_verbs or result.get("completion") is True
        said_attempt = _is_attempt(statement)
        said_pass = verb == PASS_VERB or result.get("success") is True
        said_fail = verb == FAIL_VERB or result.get("success") is False
    if said_view:
        found.add("view")
    if said_attempt:
        found.add("attempt")
    if said_pass and (mastery is None or scaled is None or scaled >= mastery):
        found.add("pass")
    if said_fail and (mastery is None or scaled is None or scaled < mastery):
        found.add("fail")
    return found


def _plan_statements(
    plan: RefPlan, learner: str, statements: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The learner's live statements that count for the module: touching it, after the latest
    reset of it, neither resets nor `satisfied` (cmi5: the LMS's own conclusion)."""
    mine = [
        s
        for s in statements
        if learner_of(s) == learner
        and any(a in plan.activities for a in _named(s))
        and not (plan.cmi5 and _verb(s) == SATISFIED_VERB)
    ]
    resets = [when(s) for s in mine if _verb(s) == RESET_VERB and _object_id(s) == plan.id]
    if resets:
        mine = [s for s in mine if when(s) > max(resets)]
    return [s for s in mine if _verb(s) != RESET_VERB]


def _first(statements: list[dict[str, Any]]) -> datetime | None:
    return min((when(s) for s in statements), default=None)


class _Timeline:
    """The statements of one learner in one module, asked "what held at instant t"."""

    def __init__(self, plan: RefPlan, statements: list[dict[str, Any]]) -> None:
        self.plan = plan
        self.statements = statements

    def upto(self, moment: datetime | None) -> list[dict[str, Any]]:
        return [s for s in self.statements if moment is None or when(s) <= moment]

    def about(self, target: str, signal: str | None, moment: datetime | None = None) -> list:
        """Statements about `target` ("" = the module's own activity) giving `signal`."""
        return [
            s
            for s in self.upto(moment)
            if _about(self.plan, s) == target
            and (signal is None or signal in _signals(self.plan, s))
        ]

    def module_waived(self, moment: datetime | None = None) -> list:
        return [
            s for s in self.upto(moment) if _verb(s) == WAIVE_VERB and _object_id(s) == self.plan.id
        ]

    def item_satisfied(self, item: RefItem, moment: datetime | None = None) -> bool:
        if self.about(item.id, "waive", moment):
            return True
        viewed = bool(self.about(item.id, "view", moment))
        passed = bool(self.about(item.id, "pass", moment))
        return {
            "NotApplicable": bool(self.upto(moment)),
            "Completed": viewed,
            "Passed": passed,
            "CompletedOrPassed": viewed or passed,
            "CompletedAndPassed": viewed and passed,
        }[item.move_on]

    def own(self, signal: str, moment: datetime | None = None) -> list:
        return self.about("", signal, moment) if self.plan.discovered else []

    def rule_met(self, moment: datetime) -> bool:
        if self.module_waived(moment):
            return True
        plan = self.plan
        content = [i for i in plan.items if i.role == "content"]
        assessments = [i for i in plan.items if i.role == "assessment"]
        parts: dict[str, bool] = {}
        if content:
            parts["Completed"] = bool(self.own("view", moment)) or all(
                self.item_satisfied(i, moment) for i in content
            )
        if assessments:
            parts["Passed"] = bool(self.own("pass", moment)) or all(
                self.item_satisfied(i, moment) for i in assessments
            )
        if plan.rule == "NotApplicable":
            return True
        if plan.rule == "Completed":
            return parts.get("Completed", True)
        if plan.rule == "Passed":
            return parts.get("Passed", True)
        if plan.rule == "CompletedOrPassed":
            return any(parts.values()) if parts else True
        return all(parts.values())

    def first_moment(self, holds: Any) -> datetime | None:
        for moment in sorted({when(s) for s in self.statements}):
            if holds(moment):
                return moment
        return None


def _item_entry(timeline: _Timeline, item: RefItem) -> dict[str, Any]:
    def first(signal: str | None) -> datetime | None:
        return _first(timeline.about(item.id, signal))

    satisfied_at = timeline.first_moment(lambda t: timeline.item_satisfied(item, t))
    attempts = timeline.about(item.id, "attempt")
    scores = [v for s in attempts if (v := _scaled(s)) is not None]
    if satisfied_at is not None:
        status = "completed"
    elif attempts or any(first(sig) for sig in ("view", "pass", "fail")):
        status = "in_progress"
    elif first(None) is not None:
        status = "started"
    else:
        status = "not_started"
    return {
        "id": item.id,
        "role": item.role,
        "move_on": item.move_on,
        "status": status,
        "accessed_at": show(first(None)),
        "viewed_at": show(first("view")),
        "passed_at": show(first("pass")),
        "failed_at": show(first("fail")),
        "attempts": len(attempts),
        "best_score": max(scores) if scores else None,
        "satisfied": satisfied_at is not None,
        "satisfied_at": show(satisfied_at),
        "waived": bool(first("waive")),
        "waived_at": show(first("waive")),
    }


def record(plan: RefPlan, learner: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
    """The full expected record (RECORD_FIELDS) of one learner in one module, from the live
    statements of every learner."""
    mine = _plan_statements(plan, learner, statements)
    timeline = _Timeline(plan, mine)
    content = [i for i in plan.items if i.role == "content"]
    assessments = [i for i in plan.items if i.role == "assessment"]
    touched = {a for s in mine if (a := _about(plan, s))}
    listed = (
        sorted((i for i in plan.items if i.id in touched or i.role == "assessment"), key=_id)
        if plan.discovered
        else list(plan.items)
    )
    entries = {item.id: _item_entry(timeline, item) for item in plan.items}
    if not mine:
        return {
            **empty_progress(
                RefModule(plan.course, plan.id, tuple(i.id for i in content), None, "", None)
            ),
            "percent": 0,
            "waived_at": None,
            "items": [entries[i.id] for i in listed],
            "items_total": len(plan.items),
            "items_satisfied": 0,
        }
    moments = sorted({when(s) for s in mine})
    completed_at = timeline.first_moment(timeline.rule_met)
    viewed = sorted(i.id for i in content if timeline.about(i.id, "view"))
    attempts = [s for i in assessments for s in timeline.about(i.id, "attempt")]
    attempts += timeline.own("attempt")
    scores = [v for s in attempts if (v := _scaled(s)) is not None]
    first_passes = [_first(timeline.about(i.id, "pass")) for i in assessments]
    all_passed = max(first_passes) if assessments and None not in first_passes else None
    passed_at = min((t for t in (all_passed, _first(timeline.own("pass"))) if t), default=None)
    satisfied = [i for i in plan.items if entries[i.id]["satisfied"]]
    in_progress = (
        viewed
        or attempts
        or timeline.own("view")
        or any(entries[i.id]["waived"] for i in plan.items)
        or any("Completed" in i.move_on and timeline.about(i.id, "view") for i in assessments)
    )
    if completed_at is not None:
        status, percent = "completed", 100
    else:
        status = "in_progress" if in_progress else "started"
        done = [
            i
            for i in plan.items
            if i in satisfied
            or (i.role == "content" and timeline.own("view"))
            or (i.role == "assessment" and timeline.own("pass"))
        ]
        percent = min(99, 100 * len(done) // len(plan.items)) if plan.items else 0
    return {
        "status": status,
        "started_at": show(moments[0]),
        "last_activity_at": show(moments[-1]),
        "completed_at": show(completed_at),
        "viewed": len(viewed),
        "required": len(content),
        "viewed_ids": viewed,
        "attempts": len(attempts),
        "best_score": max(scores) if scores else None,
        "passed": passed_at is not None,
        "passed_at": show(passed_at),
        "waived": bool(timeline.module_waived()),
        "waived_at": show(_first(timeline.module_waived())),
        "percent": percent,
        "items": [entries[i.id] for i in listed],
        "items_total": len(plan.items),
        "items_satisfied": len(satisfied),
    }


def _id(item: RefItem) -> str:
    return item.id


# --- cmi5 course structures ------------------------------------------------------------------
# A course tree as the tests write it: {"id", "title", "children": [node, ...]}, a node being
# {"au": id, "moveOn": ..., "masteryScore": ...} or {"block": id, "title", "children": [...]}.


def cmi5_plans(
    tree: dict[str, Any], launch_ids: dict[str, tuple[str, ...]] | None = None
) -> list[RefPlan]:
    """The modules of a cmi5 course: one per outermost block, and one named after the course
    for the AUs directly in it (listed first)."""
    launch_ids = launch_ids or {}

    def au(node: dict[str, Any], path: tuple[str, ...]) -> RefItem:
        move_on = node.get("moveOn", "NotApplicable")
        return RefItem(
            node["au"],
            "assessment" if "Passed" in move_on else "content",
            move_on,
            node.get("masteryScore"),
            launch_ids.get(node["au"], ()),
            path,
        )

    def collect(node: dict[str, Any], path: tuple[str, ...]) -> tuple[list[RefItem], list[str]]:
        items: list[RefItem] = []
        blocks: list[str] = []
        for child in node["children"]:
            if "au" in child:
                items.append(au(child, path))
            else:
                blocks.append(child["block"])
                more, nested = collect(child, (*path, child["block"]))
                items += more
                blocks += nested
        return items, blocks

    plans = []
    loose = [au(c, ()) for c in tree["children"] if "au" in c]
    if loose:
        plans.append(RefPlan(tree["id"], tree["id"], tuple(loose), cmi5=True))
    for child in tree["children"]:
        if "block" in child:
            items, blocks = collect(child, ())
            plans.append(
                RefPlan(tree["id"], child["block"], tuple(items), cmi5=True, blocks=tuple(blocks))
            )
    return plans


def cmi5_units(
    tree: dict[str, Any],
    learner: str,
    statements: list[dict[str, Any]],
    launch_ids: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, str]:
    """Each block (nested ones included) and the course that is satisfied for the learner in
    these statements, with the first instant it was (cmi5 9.3.9, 13.1.4)."""
    plans = cmi5_plans(tree, launch_ids)
    timelines = [_Timeline(p, _plan_statements(p, learner, statements)) for p in plans]
    instants = sorted({when(s) for t in timelines for s in t.statements})

    def first(holds: Any) -> str | None:
        return show(next((t for t in instants if holds(t)), None))

    found: dict[str, str | None] = {}
    for timeline in timelines:
        plan = timeline.plan
        if plan.id != tree["id"]:
            found[plan.id] = first(timeline.rule_met)
        for block in plan.blocks:
            inside = [i for i in plan.items if block in i.blocks]
            found[block] = first(
                lambda t, inside=inside, timeline=timeline: (
                    bool(timeline.module_waived(t))
                    or all(timeline.item_satisfied(i, t) for i in inside)
                )
            )
    found[tree["id"]] = first(lambda t: all(tl.rule_met(t) for tl in timelines))
    return {unit: moment for unit, moment in found.items() if moment is not None}


def cmi5_xml(tree: dict[str, Any]) -> bytes:
    """The tree as a cmi5.xml course structure (cmi5 13.2)."""

    def title(text: str) -> str:
        return (
            f'<title><langstring lang="en-US">{text}</langstring></title>'
            f'<description><langstring lang="en-US">{text}</langstring></description>'
        )

    def node(child: dict[str, Any]) -> str:
        if "au" in child:
            attributes = f'id="{child["au"]}"'
            if "moveOn" in child:
                attributes += f' moveOn="{child["moveOn"]}"'
            if child.get("masteryScore") is not None:
                attributes += f' masteryScore="{child["masteryScore"]}"'
            return f"<au {attributes}>{title(child['au'])}<url>au.html</url></au>"
        inner = "".join(node(c) for c in child["children"])
        return f'<block id="{child["block"]}">{title(child["block"])}{inner}</block>'

    body = "".join(node(c) for c in tree["children"])
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<courseStructure xmlns="https://w3id.org/xapi/profiles/cmi5/v1/CourseStructure.xsd">'
        f'<course id="{tree["id"]}">{title(tree.get("title", "course"))}</course>'
        f"{body}</courseStructure>"
    ).encode()


# --- discovered modules -----------------------------------------------------------------------


def discovered_plans(statements: list[dict[str, Any]]) -> list[RefPlan]:
    """The discovered modules these statements make (no course defined): a statement with a
    parent puts its object in the module its first parent names, in the course its first other
    grouping names (else one named after the module); an object whose definition type is the
    assessment type, or that such a statement judges, is the module's assessment. Voided
    statements discover too (discovery keeps what it found). The tests never send a cmi5 or a
    module-level statement with a parent, nor an object that is also a module."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for statement in statements:
        target = _object_id(statement)
        parents = [p for p in _context_list(statement, "parent") if p != target]
        if _is_voiding(statement) or target is None or not parents:
            continue
        module = parents[0]
        groupings = [g for g in _context_list(statement, "grouping") if g not in (module, target)]
        course = groupings[0] if groupings else module
        result = _result(statement) or {}
        kind = ((statement.get("object") or {}).get("definition") or {}).get("type")
        judged = (
            _verb(statement) in (PASS_VERB, FAIL_VERB)
            or isinstance(result.get("success"), bool)
            or kind == ASSESSMENT_TYPE
        )
        items = found.setdefault((course, module), {})
        if judged or items.get(target) != "assessment":
            items[target] = "assessment" if judged else items.get(target, "content")
    return [
        RefPlan(
            course,
            module,
            tuple(
                RefItem(i, role, "Passed" if role == "assessment" else "Completed")
                for i, role in sorted(items.items())
            ),
            discovered=True,
        )
        for (course, module), items in sorted(found.items())
    ]
