"""cmi5 on the LMS side (cmi5 Quartz, sections 8.1, 9.3, 9.4, 9.6, 13), pure: block and course
satisfaction, and the `satisfied` statements an LMS writes.

Records stay per module (an outermost block, lrs.progress.rules); this module computes, for
one learner and one registration, which blocks (nested ones included) and which course are
satisfied, from the module records' per-item list:

- an AU is satisfied when its moveOn is met or it is waived (the record's `items`);
- a block is satisfied when all its AUs and nested blocks are (cmi5 13.1.4 moveOn, "Usage");
  an outermost block when its module record is `completed` (the same thing for a cmi5 module:
  every AU satisfied, or the module waived through the progress API);
- the course when all its blocks and AUs are (every module record `completed`).

The moment each became satisfied is the latest moment among its parts, computed from the
statements, never the clock.

**`satisfied` statements** (cmi5 9.3.9, 9.6): for a course that asks for them
(`Course.emit_satisfied`, on by default for imported cmi5 courses), the engine stores one
`satisfied_statement` per block or course and registration when `satisfied_units` first holds
it. Its id is derived from the registration and the unit (uuid5), so storing it twice is a
no-op (cmi5 9.3.9: the LMS SHOULD NOT issue multiple per registration). Its object is an
activity id generated for the block or course (`unit_activity_id`: cmi5 9.3.9, it MUST NOT
match the publisher id) with the cmi5 block or course activity type; the publisher id is in
`grouping`; the session id is the one of the AU statement that triggered it
(`session_of`), or one generated for it when none did (cmi5 9.6.1). It voids nothing. If the
unit later stops being satisfied (a voided pass), the records and `satisfied_units` say so at
once, and the stored `satisfied` statement stays: statements are immutable, it recorded what
held when it was written, and when the unit is satisfied again its id is the same, so no
second one is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lrs.progress.catalogue import Course, Module
from lrs.xapi.timestamps import format_timestamp, from_micros, parse_timestamp, to_micros

CMI5_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/cmi5"
MOVEON_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/moveon"
SESSION_EXTENSION = "https://w3id.org/xapi/cmi5/context/extensions/sessionid"
MASTERY_EXTENSION = "https://w3id.org/xapi/cmi5/context/extensions/masteryscore"
BLOCK_TYPE = "https://w3id.org/xapi/cmi5/activitytype/block"
COURSE_TYPE = "https://w3id.org/xapi/cmi5/activitytype/course"

ADL = "http://adlnet.gov/expapi/verbs/"
W3ID = "https://w3id.org/xapi/adl/verbs/"
# The cmi5 defined verbs (cmi5 9.3), by name.
VERBS = {
    "launched": ADL + "launched",
    "initialized": ADL + "initialized",
    "completed": ADL + "completed",
    "passed": ADL + "passed",
    "failed": ADL + "failed",
    "abandoned": W3ID + "abandoned",
    "waived": W3ID + "waived",
    "terminated": ADL + "terminated",
    "satisfied": W3ID + "satisfied",
}
SATISFIED_VERB = VERBS["satisfied"]

# The namespace of every id this module generates (statement ids, activity ids, session ids).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:x-lrs:cmi5")


@dataclass(frozen=True)
class Unit:
    """A block (outermost or nested) or the course: what a `satisfied` statement is about."""

    id: str  # the publisher id, from cmi5.xml (or the JSON course definition)
    kind: Literal["block", "course"]
    title: str
    parent: str | None  # the block or course that holds it; None for the course
    module: str | None  # the module (outermost block) it belongs to; None for the course


def units(course: Course) -> list[Unit]:
    """The course, then each module that is a block, each followed by its nested blocks. The
    module of a cmi5 course's loose AUs carries the course's id and is not a block."""
    found = [Unit(course.id, "course", course.title, None, None)]
    for module in course.modules:
        if module.id != course.id:
            found.append(Unit(module.id, "block", module.title, course.id, module.id))
        found += [Unit(b.id, "block", b.title, b.parent, module.id) for b in module.blocks]
    return found


def _micros(stamp: str | None) -> int | None:
    return to_micros(parse_timestamp(stamp)) if stamp else None


def _stamp(moment: int) -> str:
    return format_timestamp(from_micros(moment))


def _nested_blocks(module: Module, block: str | None) -> list[str]:
    """The nested blocks that hold an item directly in `block`, innermost first."""
    parents = {b.id: b.parent for b in module.blocks}
    chain: list[str] = []
    while block is not None and block != module.id:
        chain.append(block)
        block = parents.get(block)
    return chain


def satisfied_units(course: Course, summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Each block (nested ones included) and the course that is satisfied, with the moment it
    became so, for one learner and registration. `summaries` maps a module id to that
    learner's record of the module (the fields `summarize` gives); a missing one is
    not_started."""
    satisfied: dict[str, str] = {}
    module_times: list[int | None] = []
    for module in course.modules:
        summary = summaries.get(module.id) or {}
        completed = _micros(summary.get("completed_at"))
        module_times.append(completed)
        if module.id != course.id and completed is not None:
            satisfied[module.id] = _stamp(completed)
        if not module.blocks:
            continue
        item_times = {
            entry["id"]: _micros(entry.get("satisfied_at")) for entry in summary.get("items") or []
        }
        waived = _micros(summary.get("waived_at"))
        times: dict[str, list[int | None]] = {b.id: [] for b in module.blocks}
        for item in module.items:
            for block in _nested_blocks(module, item.block):
                times[block].append(item_times.get(item.id))
        for block_id, parts in times.items():
            natural = max(parts) if parts and None not in parts else None  # type: ignore[type-var]
            candidates = [t for t in (natural, waived) if t is not None]
            if candidates:
                satisfied[block_id] = _stamp(min(candidates))
    if module_times and None not in module_times:
        satisfied[course.id] = _stamp(max(module_times))  # type: ignore[type-var]
    return satisfied


def unit_activity_id(publisher_id: str) -> str:
    """The activity id this LMS uses for a block or course in `satisfied` statements: stable,
    and never the publisher id (cmi5 9.3.9)."""
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, 'unit|' + publisher_id)}"


def satisfied_statement_id(registration: str, unit_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"satisfied|{registration.lower()}|{unit_id}"))


def generated_session_id(registration: str, unit_id: str) -> str:
    """A session id for a `satisfied` statement that no AU session triggered (cmi5 9.6.1:
    unique; derived, so that the statement is the same whenever it is built)."""
    return str(uuid.uuid5(NAMESPACE, f"session|{registration.lower()}|{unit_id}"))


def session_of(statement: Mapping[str, Any]) -> str | None:
    """The cmi5 session id of a statement (cmi5 9.6.3.1), if it has one."""
    extensions = (statement.get("context") or {}).get("extensions")
    value = extensions.get(SESSION_EXTENSION) if isinstance(extensions, dict) else None
    return value if isinstance(value, str) and value else None


def launch_pair(statement: Mapping[str, Any]) -> tuple[str, str] | None:
    """(launch activity id, AU publisher id) from a cmi5 defined statement about an AU: its
    object is the activity id the LMS generated for the launch (cmi5 8.1, 9.4), the first
    grouping activity is the AU's publisher id (9.6.2.3). The engine may register the pair
    (`Item.launch_ids`) so that statements without the grouping are linked too."""
    context = statement.get("context") or {}
    activities = context.get("contextActivities") or {}
    categories = activities.get("category") or []
    if not any(isinstance(c, dict) and c.get("id") == CMI5_CATEGORY for c in categories):
        return None
    if (statement.get("verb") or {}).get("id") == SATISFIED_VERB:
        return None
    obj = statement.get("object") or {}
    grouping = activities.get("grouping") or []
    if obj.get("objectType", "Activity") != "Activity" or not grouping:
        return None
    publisher = grouping[0].get("id") if isinstance(grouping[0], dict) else None
    launch = obj.get("id")
    if not isinstance(publisher, str) or not isinstance(launch, str) or launch == publisher:
        return None
    return launch, publisher


def satisfied_statement(
    unit: Unit,
    registration: str,
    moment: str,
    session_id: str | None,
    authority: dict[str, Any],
    actor: dict[str, Any],
) -> dict[str, Any]:
    """The `satisfied` statement for one block or course, one learner (`actor`, an Agent with
    an account in cmi5 9.2) and one registration, at `moment` (an xAPI timestamp: when the
    unit became satisfied), with the LRS's own `authority` (see the module docstring)."""
    definition: dict[str, Any] = {"type": BLOCK_TYPE if unit.kind == "block" else COURSE_TYPE}
    if unit.title:
        definition["name"] = {"und": unit.title}
    return {
        "id": satisfied_statement_id(registration, unit.id),
        "actor": actor,
        "verb": {"id": SATISFIED_VERB, "display": {"en-US": "satisfied"}},
        "object": {
            "objectType": "Activity",
            "id": unit_activity_id(unit.id),
            "definition": definition,
        },
        "context": {
            "registration": registration,
            "contextActivities": {
                "category": [{"objectType": "Activity", "id": CMI5_CATEGORY}],
                "grouping": [{"objectType": "Activity", "id": unit.id}],
            },
            "extensions": {
                SESSION_EXTENSION: session_id or generated_session_id(registration, unit.id)
            },
        },
        "timestamp": moment,
        "authority": authority,
    }
