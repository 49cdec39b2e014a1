"""The progress rules (design notes section 5) as one pure function.

`derive_progress(module, profile, statements)` takes every non-voided statement of one learner
that touches one module, in any order, and returns the progress fields. Nothing here reads a
clock or a database: the same statements always give the same record, so arrival order,
duplicates and racing workers cannot change the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lrs.progress.catalogue import Item, Module
from lrs.progress.profiles import Profile
from lrs.xapi.timestamps import format_timestamp, parse_timestamp

STATUSES = ("not_started", "started", "in_progress", "completed")


def statement_time(statement: dict[str, Any]) -> datetime:
    return parse_timestamp(statement.get("timestamp") or statement["stored"])


def touches(module: Module, statement: dict[str, Any]) -> bool:
    """A statement touches a module when its object is the module or one of its items, or its
    context names the module as parent or grouping."""
    obj = statement.get("object") or {}
    if obj.get("objectType", "Activity") == "Activity" and obj.get("id") in module.activity_ids:
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


@dataclass
class _ItemState:
    first_viewed: datetime | None = None
    first_passed: datetime | None = None
    waived: datetime | None = None
    attempts: set[str] = field(default_factory=set)
    best_score: float | None = None

    def satisfied_at(self, item: Item, started: datetime) -> datetime | None:
        natural = _move_on_time(item.move_on, self.first_viewed, self.first_passed, started)
        return _earliest(natural, self.waived)


def _earliest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return min(present) if present else None


def _move_on_time(
    move_on: str, viewed: datetime | None, passed: datetime | None, started: datetime
) -> datetime | None:
    if move_on == "NotApplicable":
        return started
    if move_on == "Completed":
        return viewed
    if move_on == "Passed":
        return passed
    if move_on == "CompletedOrPassed":
        return _earliest(viewed, passed)
    # CompletedAndPassed
    return max(viewed, passed) if viewed and passed else None


def _after_reset(
    module: Module, profile: Profile, statements: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A reset statement on the module makes everything at or before it count for nothing."""
    resets = [
        statement_time(s)
        for s in statements
        if profile.reset.matches(s) and (s.get("object") or {}).get("id") == module.id
    ]
    if not resets:
        return statements
    barrier = max(resets)
    return [s for s in statements if statement_time(s) > barrier]


def derive_progress(
    module: Module, profile: Profile, statements: list[dict[str, Any]]
) -> dict[str, Any]:
    """The progress fields of one learner in one module."""
    relevant = [
        s
        for s in statements
        if touches(module, s) and (s.get("verb") or {}).get("id") not in profile.ignored_verbs
    ]
    relevant = _after_reset(module, profile, relevant)
    relevant = [s for s in relevant if not profile.reset.matches(s)]
    # Sorting by (time, id) makes every min/max below independent of arrival order.
    relevant.sort(key=lambda s: (statement_time(s), s["id"]))
    content = [item for item in module.items if item.role == "content"]
    assessments = [item for item in module.items if item.role == "assessment"]
    if not relevant:
        return _empty(module, content)

    started = statement_time(relevant[0])
    last = statement_time(relevant[-1])
    states = {item.id: _ItemState() for item in module.items}
    module_waived: datetime | None = None
    for statement in relevant:
        moment = statement_time(statement)
        target = (statement.get("object") or {}).get("id")
        if profile.waived.matches(statement):
            if target == module.id:
                module_waived = _earliest(module_waived, moment)
            elif target in states:
                states[target].waived = _earliest(states[target].waived, moment)
            continue
        item = module.item(target) if isinstance(target, str) else None
        if item is None:
            continue
        state = states[item.id]
        if profile.viewed.matches(statement):
            state.first_viewed = _earliest(state.first_viewed, moment)
        scaled = _scaled(statement)
        if profile.attempted.matches(statement):
            state.attempts.add(statement["id"])
            if scaled is not None:
                state.best_score = (
                    scaled if state.best_score is None else max(state.best_score, scaled)
                )
        meets_mastery = item.mastery_score is None or scaled is None or scaled >= item.mastery_score
        if profile.passed.matches(statement) and meets_mastery:
            state.first_passed = _earliest(state.first_passed, moment)

    satisfied = {item.id: states[item.id].satisfied_at(item, started) for item in module.items}
    completed_at = _earliest(
        _rule_time(module.rule, content, assessments, satisfied, started), module_waived
    )

    viewed_ids = sorted(item.id for item in content if states[item.id].first_viewed)
    attempts = sum(len(states[item.id].attempts) for item in assessments)
    scores = [states[i.id].best_score for i in assessments if states[i.id].best_score is not None]
    passed_times = [states[item.id].first_passed for item in assessments]
    passed = bool(assessments) and all(passed_times)
    passed_at = max(passed_times) if passed else None  # type: ignore[type-var]

    # in_progress (design 5): a required content item viewed or the assessment attempted;
    # a waived item, or a view of an assessment whose moveOn asks for completion, count too.
    any_progress = (
        bool(viewed_ids)
        or attempts > 0
        or any(states[i.id].waived for i in module.items)
        or any(states[i.id].first_viewed and "Completed" in i.move_on for i in assessments)
    )
    if completed_at is not None:
        status, percent = "completed", 100
    else:
        status = "in_progress" if any_progress else "started"
        done = sum(1 for at in satisfied.values() if at is not None)
        percent = min(99, (100 * done) // len(module.items)) if module.items else 0
    return {
        "status": status,
        "started_at": format_timestamp(started),
        "last_activity_at": format_timestamp(last),
        "completed_at": format_timestamp(completed_at) if completed_at else None,
        "viewed": len(viewed_ids),
        "required": len(content),
        "viewed_ids": viewed_ids,
        "attempts": attempts,
        "best_score": max(scores) if scores else None,
        "passed": passed,
        "passed_at": format_timestamp(passed_at) if passed_at else None,
        "waived": module_waived is not None,
        "percent": percent,
        "discovered": module.discovered,
    }


def _group_time(
    items: list[Item], satisfied: dict[str, datetime | None], started: datetime
) -> datetime | None:
    """When every item of the group was satisfied; an empty group is satisfied on access."""
    times = [satisfied[item.id] for item in items]
    if any(t is None for t in times):
        return None
    return max([started, *times])  # type: ignore[list-item]


def _rule_time(
    rule: str,
    content: list[Item],
    assessments: list[Item],
    satisfied: dict[str, datetime | None],
    started: datetime,
) -> datetime | None:
    if rule == "NotApplicable":
        return started
    content_time = _group_time(content, satisfied, started)
    assessment_time = _group_time(assessments, satisfied, started)
    if rule == "Completed":
        return content_time
    if rule == "Passed":
        return assessment_time
    if rule == "CompletedOrPassed":
        candidates = []
        if content:
            candidates.append(content_time)
        if assessments:
            candidates.append(assessment_time)
        return _earliest(*candidates) if candidates else started
    # CompletedAndPassed, the product's default
    if content_time is None or assessment_time is None:
        return None
    return max(content_time, assessment_time)


def _empty(module: Module, content: list[Item]) -> dict[str, Any]:
    return {
        "status": "not_started",
        "started_at": None,
        "last_activity_at": None,
        "completed_at": None,
        "viewed": 0,
        "required": len(content),
        "viewed_ids": [],
        "attempts": 0,
        "best_score": None,
        "passed": False,
        "passed_at": None,
        "waived": False,
        "percent": 0,
        "discovered": module.discovered,
    }
