"""A deliberately naive reference implementation of the progress rules (design notes 2-5) for
the `generic` profile, written from the design notes alone: it shares no code with
`lrs/progress/rules.py` so that the property tests compare two independent readings.

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
- waivers of single items are out of scope (the tests waive whole modules only);
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


def _touches(module: RefModule, statement: dict[str, Any]) -> bool:
    if _object_id(statement) in module.activities:
        return True
    context = (statement.get("context") or {}).get("contextActivities") or {}
    named = [a.get("id") for kind in ("parent", "grouping") for a in context.get(kind, [])]
    return module.id in named


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
