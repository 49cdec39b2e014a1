"""cmi5 on the learner's side (issue 11), rule by rule, named after the cmi5 section: statements
shaped as an AU and an LMS send them (launch activity id as object, publisher id in grouping),
derived by lrs.progress and checked against the independent reference on every field it
predicts (tests/cmi5_support.py: derive_cmi5)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Any

import pytest

from lrs.progress.catalogue import (
    CourseDefinition,
    CourseStructureError,
    Module,
    parse_cmi5_course,
)
from lrs.progress.cmi5 import (
    BLOCK_TYPE,
    COURSE_TYPE,
    SATISFIED_VERB,
    launch_pair,
    satisfied_statement,
    satisfied_units,
    session_of,
    unit_activity_id,
    units,
)
from lrs.progress.linking import item_for, linked_ids, touches
from lrs.progress.rules import derive_progress
from lrs.xapi.validation import validate_statement
from tests.cmi5_support import (
    CMI5,
    LEARNER_ACTOR,
    REGISTRATION,
    at,
    cmi5_statement,
    derive_cmi5,
    launch_id,
    void,
    with_launch_ids,
)
from tests.progress_reference import CMI5_CATEGORY, cmi5_xml

C = "https://example.com/cmi5/course"
B1, B2, NESTED = f"{C}/block-intro", f"{C}/block-lab", f"{C}/block-lab/part"
AU1, AU2, AU3 = f"{C}/au-intro", f"{C}/au-lab", f"{C}/au-quiz"


def au(au_id: str, move_on: str | None = None, mastery: float | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"au": au_id}
    if move_on is not None:
        node["moveOn"] = move_on
    if mastery is not None:
        node["masteryScore"] = mastery
    return node


def two_blocks(move_on1: str = "CompletedAndPassed", move_on2: str = "Passed") -> dict:
    """Block 1 holds AU1; block 2 holds a nested block holding AU2."""
    return {
        "id": C,
        "children": [
            {"block": B1, "children": [au(AU1, move_on1, 0.8)]},
            {"block": B2, "children": [{"block": NESTED, "children": [au(AU2, move_on2, 0.7)]}]},
        ],
    }


def one_au(move_on: str | None = "Passed", mastery: float | None = 0.8) -> dict:
    return {"id": C, "children": [{"block": B1, "children": [au(AU1, move_on, mastery)]}]}


def session(au_id: str, start: float, name: str, *middle: tuple[str, dict[str, Any]]) -> list:
    """One AU session as cmi5 9.3 orders it: launched (by the LMS), initialized, the AU's
    statements, terminated; one minute apart."""
    sent = [
        cmi5_statement("launched", au_id, start, session=name),
        cmi5_statement("initialized", au_id, start + 1, session=name),
    ]
    for offset, (verb, extra) in enumerate(middle, start=2):
        sent.append(cmi5_statement(verb, au_id, start + offset, session=name, **extra))
    sent.append(cmi5_statement("terminated", au_id, start + len(middle) + 2, session=name))
    return sent


def fail(score: float, mastery: float | None = None) -> tuple[str, dict[str, Any]]:
    return "failed", {"result": {"success": False, "score": {"scaled": score}}, "mastery": mastery}


def pass_(score: float, mastery: float | None = None) -> tuple[str, dict[str, Any]]:
    return "passed", {"result": {"success": True, "score": {"scaled": score}}, "mastery": mastery}


COMPLETED = ("completed", {"result": {"completion": True}})


def step(
    au_id: str, signal: tuple[str, dict[str, Any]], minute: float, defined: bool = True
) -> dict[str, Any]:
    verb, extra = signal
    return cmi5_statement(verb, au_id, minute, defined=defined, **extra)


def item(record: dict[str, Any], item_id: str) -> dict[str, Any]:
    return next(entry for entry in record["items"] if entry["id"] == item_id)


# --- the trace ---------------------------------------------------------------------------


def test_two_au_trace_with_launch_activity_ids_satisfies_aus_blocks_and_course() -> None:
    """Issue 11 finding 1 (cmi5 8.1, 9.4, 9.6.2.3): launch, initialize, fail below the mastery
    score, retry, pass, terminate, on two AUs whose statements' objects are the launch
    activity ids (never the AU ids): every AU, block and the course end satisfied."""
    trace = [
        *session(AU1, 0, "s1", fail(0.6, 0.8)),
        *session(AU1, 10, "s2", COMPLETED, pass_(0.9, 0.8)),
        *session(AU2, 20, "s3", fail(0.5, 0.7)),
        *session(AU2, 30, "s4", pass_(0.75, 0.7)),
    ]
    assert all(s["object"]["id"] not in (AU1, AU2) for s in trace)
    records, satisfied, _ = derive_cmi5(two_blocks(), trace)

    first = records[B1]
    assert first["status"] == "completed" and first["completed_at"] == at(13)
    assert first["started_at"] == at(0) and first["last_activity_at"] == at(14)
    assert first["attempts"] == 2 and first["best_score"] == 0.9 and first["passed_at"] == at(13)
    intro = item(first, AU1)
    assert intro["status"] == "completed" and intro["satisfied_at"] == at(13)
    assert intro["failed_at"] == at(2) and intro["viewed_at"] == at(12)
    assert intro["passed_at"] == at(13) and intro["attempts"] == 2

    second = records[B2]
    assert second["status"] == "completed" and second["completed_at"] == at(32)
    assert item(second, AU2)["failed_at"] == at(22)

    assert satisfied == {B1: at(13), NESTED: at(32), B2: at(32), C: at(32)}


def test_the_trace_half_done_leaves_the_second_block_and_the_course_unsatisfied() -> None:
    trace = [
        *session(AU1, 0, "s1", COMPLETED, pass_(0.9, 0.8)),
        *session(AU2, 20, "s3", fail(0.5, 0.7)),
    ]
    records, satisfied, _ = derive_cmi5(two_blocks(), trace)
    assert records[B2]["status"] == "in_progress" and records[B2]["attempts"] == 1
    assert item(records[B2], AU2)["status"] == "in_progress"
    assert satisfied == {B1: at(3)}


# --- linking (cmi5 8.1, 9.4, 9.6.2.3) -----------------------------------------------------------


def test_linking_by_publisher_id_in_grouping_9_6_2_3() -> None:
    course = parse_cmi5_course(cmi5_xml(one_au()))
    module = course.modules[0]
    statement = cmi5_statement("completed", AU1, 1)
    assert linked_ids(statement) == [launch_id(AU1), AU1]
    assert touches(module, statement)
    assert item_for(module, CMI5, statement) == module.items[0]


def test_linking_by_registered_launch_activity_id_8_1() -> None:
    """A statement without the grouping (not as 9.6.2.3 asks) is still the AU's when its
    object is a launch activity id registered for the AU."""
    bare = [
        cmi5_statement("initialized", AU1, 1, grouping=False),
        cmi5_statement("passed", AU1, 2, grouping=False, result={"success": True}),
    ]
    unlinked, _, _ = derive_cmi5(one_au(), bare)
    assert unlinked[B1]["status"] == "not_started"
    linked, satisfied, _ = derive_cmi5(one_au(), bare, {AU1: (launch_id(AU1),)})
    assert linked[B1]["status"] == "completed" and linked[B1]["completed_at"] == at(2)
    assert satisfied == {B1: at(2), C: at(2)}


def test_the_au_id_as_object_still_links_9_4() -> None:
    statement = cmi5_statement("passed", AU1, 1, obj=AU1, result={"success": True})
    records, _, _ = derive_cmi5(one_au(), [statement])
    assert records[B1]["status"] == "completed"


def test_launch_pair_names_the_launch_id_and_the_au_8_1() -> None:
    assert launch_pair(cmi5_statement("launched", AU1, 0)) == (launch_id(AU1), AU1)
    assert launch_pair(cmi5_statement("launched", AU1, 0, defined=False)) is None
    assert launch_pair(cmi5_statement("launched", AU1, 0, obj=AU1)) is None
    assert launch_pair(cmi5_statement("launched", AU1, 0, grouping=False)) is None


def test_another_aus_grouping_does_not_link() -> None:
    records, _, _ = derive_cmi5(two_blocks(), [cmi5_statement("completed", AU2, 1)])
    assert records[B1]["status"] == "not_started"
    assert records[B2]["status"] == "started"


# --- verbs (cmi5 9.3) ---------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["launched", "initialized", "terminated", "abandoned"])
def test_session_verbs_are_access_only_9_3_1_2_6_8(verb: str) -> None:
    records, satisfied, _ = derive_cmi5(one_au(), [cmi5_statement(verb, AU1, 4)])
    assert records[B1]["status"] == "started" and records[B1]["started_at"] == at(4)
    assert item(records[B1], AU1)["status"] == "started"
    assert item(records[B1], AU1)["accessed_at"] == at(4)
    assert satisfied == {}


def test_completed_is_viewed_9_3_3() -> None:
    records, _, _ = derive_cmi5(one_au("Completed", None), [step(AU1, COMPLETED, 3)])
    assert records[B1]["status"] == "completed" and records[B1]["viewed_ids"] == [AU1]
    assert item(records[B1], AU1)["viewed_at"] == at(3)


def test_passed_and_failed_are_attempts_9_3_4_and_9_3_5() -> None:
    history = [step(AU1, fail(0.2), 1), step(AU1, pass_(0.85), 2)]
    records, _, _ = derive_cmi5(one_au("Passed", 0.8), history)
    assert records[B1]["attempts"] == 2 and records[B1]["best_score"] == 0.85
    entry = item(records[B1], AU1)
    assert entry["failed_at"] == at(1) and entry["passed_at"] == at(2)


def test_a_pass_below_the_mastery_score_judges_nothing_9_3_4() -> None:
    """9.3.4: a Passed statement's scaled score MUST be at or above the masteryScore; one that
    is not conflicts (6.3: the LMS rejects or voids it), so it passes nothing."""
    records, _, _ = derive_cmi5(one_au("Passed", 0.8), [step(AU1, pass_(0.7), 1)])
    assert records[B1]["status"] == "in_progress" and records[B1]["passed"] is False
    assert records[B1]["attempts"] == 1 and item(records[B1], AU1)["passed_at"] is None


def test_a_fail_at_or_above_the_mastery_score_judges_nothing_9_3_5() -> None:
    records, _, _ = derive_cmi5(one_au("Passed", 0.8), [step(AU1, fail(0.8), 1)])
    assert item(records[B1], AU1)["failed_at"] is None
    assert item(records[B1], AU1)["attempts"] == 1


def test_the_mastery_score_the_lms_gave_wins_9_6_3_2_and_10() -> None:
    """10: the masteryScore in LMS.LaunchData MAY differ from the course structure's; the AU
    judges by it and carries it in the masteryscore extension (9.6.3.2)."""
    lowered = [step(AU1, pass_(0.7, 0.6), 1)]
    records, _, _ = derive_cmi5(one_au("Passed", 0.8), lowered)
    assert records[B1]["status"] == "completed"
    raised = [step(AU1, pass_(0.85, 0.9), 1)]
    records, _, _ = derive_cmi5(one_au("Passed", 0.8), raised)
    assert records[B1]["passed"] is False


def test_a_score_without_mastery_score_passes_as_the_au_says() -> None:
    records, _, _ = derive_cmi5(one_au("Passed", None), [step(AU1, pass_(0.1), 1)])
    assert records[B1]["status"] == "completed"


def test_waived_satisfies_any_move_on_9_3_7() -> None:
    waiver = cmi5_statement(
        "waived",
        AU1,
        5,
        session="w1",
        result={
            "success": True,
            "completion": True,
            "extensions": {"https://w3id.org/xapi/cmi5/result/extensions/reason": "Tested Out"},
        },
    )
    records, satisfied, _ = derive_cmi5(one_au("CompletedAndPassed", 0.8), [waiver])
    entry = item(records[B1], AU1)
    assert entry["waived"] and entry["waived_at"] == at(5) and entry["status"] == "completed"
    assert records[B1]["status"] == "completed" and records[B1]["waived"] is False
    assert satisfied == {B1: at(5), C: at(5)}


def test_satisfied_from_an_lms_is_not_counted_9_3_9() -> None:
    """The LMS derives `satisfied` from the other statements; counting it would count twice,
    even as an access."""
    lms = cmi5_statement(SATISFIED_VERB, B1, 1, obj=unit_activity_id(B1))
    lms["context"]["contextActivities"]["grouping"] = [{"id": B1}]
    records, satisfied, _ = derive_cmi5(one_au(), [lms])
    assert records[B1]["status"] == "not_started" and satisfied == {}


# --- allowed statements (cmi5 7.1.3) -----------------------------------------------------------


def test_allowed_statements_count_as_access_only_7_1_3() -> None:
    allowed = [
        step(AU1, COMPLETED, 1, defined=False),
        step(AU1, pass_(1.0), 2, defined=False),
        cmi5_statement("answered", AU1, 3, defined=False, obj=f"{AU1}/q1"),
    ]
    records, satisfied, _ = derive_cmi5(one_au("CompletedOrPassed", 0.5), allowed)
    record = records[B1]
    assert record["status"] == "started" and record["last_activity_at"] == at(3)
    assert record["attempts"] == 0 and record["passed"] is False
    assert item(record, AU1)["status"] == "started" and satisfied == {}


# --- moveOn (cmi5 13.1.4) ----------------------------------------------------------------------

MOVE_ON_CASES = [
    ("Completed", [COMPLETED], 3),
    ("Completed", [pass_(0.9)], None),
    ("Passed", [pass_(0.9)], 3),
    ("Passed", [COMPLETED], None),
    ("CompletedOrPassed", [COMPLETED], 3),
    ("CompletedOrPassed", [pass_(0.9)], 3),
    ("CompletedAndPassed", [COMPLETED], None),
    ("CompletedAndPassed", [COMPLETED, pass_(0.9)], 4),
    ("NotApplicable", [], 1),
]


@pytest.mark.parametrize(("move_on", "middle", "satisfied_minute"), MOVE_ON_CASES)
def test_move_on_13_1_4(
    move_on: str, middle: list[tuple[str, dict[str, Any]]], satisfied_minute: int | None
) -> None:
    trace = session(AU1, 1, "s1", *middle)
    records, satisfied, _ = derive_cmi5(one_au(move_on, 0.5), trace)
    entry = item(records[B1], AU1)
    assert entry["satisfied_at"] == (at(satisfied_minute) if satisfied_minute else None)
    assert (B1 in satisfied) is (satisfied_minute is not None)


def test_move_on_defaults_to_not_applicable_13_1_4() -> None:
    records, satisfied, _ = derive_cmi5(one_au(None, None), [cmi5_statement("launched", AU1, 2)])
    assert item(records[B1], AU1)["move_on"] == "NotApplicable"
    assert records[B1]["status"] == "completed" and satisfied == {B1: at(2), C: at(2)}


# --- blocks and the course (cmi5 9.3.9, 13.1.4 "Usage") ----------------------------------------


def test_nested_blocks_are_kept_and_judged_13_1_2() -> None:
    tree = {
        "id": C,
        "children": [
            au(AU3, "Completed"),
            {
                "block": B1,
                "children": [
                    au(AU1, "Completed"),
                    {"block": NESTED, "children": [au(AU2, "Passed")]},
                ],
            },
        ],
    }
    course = parse_cmi5_course(cmi5_xml(tree))
    assert [m.id for m in course.modules] == [C, B1]
    block = course.modules[1]
    assert [b.id for b in block.blocks] == [NESTED] and block.blocks[0].parent == B1
    assert [(i.id, i.block) for i in block.items] == [(AU1, None), (AU2, NESTED)]
    assert [(u.id, u.kind, u.parent) for u in units(course)] == [
        (C, "course", None),
        (B1, "block", C),
        (NESTED, "block", B1),
    ]
    records, satisfied, _ = derive_cmi5(tree, [step(AU1, COMPLETED, 1)])
    assert satisfied == {} and records[B1]["status"] == "in_progress"
    trace = [
        cmi5_statement("passed", AU2, 1, result={"success": True}),
        step(AU1, COMPLETED, 2),
        cmi5_statement("completed", AU3, 3, result={"completion": True}),
    ]
    _, satisfied, _ = derive_cmi5(tree, trace)
    assert satisfied == {NESTED: at(1), B1: at(2), C: at(3)}


def test_a_course_is_satisfied_only_when_every_block_is() -> None:
    trace = session(AU2, 0, "s1", pass_(0.9))
    _, satisfied, _ = derive_cmi5(two_blocks(), trace)
    assert satisfied == {NESTED: at(2), B2: at(2)}


def test_a_voided_pass_unsatisfies_the_block_and_the_course() -> None:
    passed = step(AU1, pass_(0.9), 2)
    trace = [cmi5_statement("launched", AU1, 1), passed]
    _, satisfied, _ = derive_cmi5(one_au("Passed", 0.8), trace)
    assert satisfied == {B1: at(2), C: at(2)}
    records, satisfied, _ = derive_cmi5(one_au("Passed", 0.8), [*trace, void(passed, 9)])
    assert satisfied == {} and records[B1]["status"] == "started"


def test_a_module_waiver_satisfies_its_nested_blocks() -> None:
    """The progress API's module waiver (no cmi5 category) satisfies the block and what is
    inside it."""
    waiver = {
        "id": str(uuid.uuid4()),
        "actor": LEARNER_ACTOR,
        "verb": {"id": "https://w3id.org/xapi/adl/verbs/waived"},
        "object": {"objectType": "Activity", "id": B2},
        "context": {"contextActivities": {"grouping": [{"id": C}]}},
        "result": {"success": True, "completion": True},
        "timestamp": "2026-01-01T10:07:00Z",
    }
    records, satisfied, _ = derive_cmi5(two_blocks(), [waiver])
    assert records[B2]["waived_at"] == at(7) and records[B2]["status"] == "completed"
    assert satisfied == {NESTED: at(7), B2: at(7)}


# --- satisfied statements (cmi5 9.3.9, 9.6) -------------------------------------------------------


def test_satisfied_statement_as_an_lms_writes_it_9_3_9() -> None:
    course = parse_cmi5_course(cmi5_xml(two_blocks()))
    unit = next(u for u in units(course) if u.id == NESTED)
    authority = {"objectType": "Agent", "account": {"homePage": "urn:x-lrs", "name": "lrs"}}
    built = satisfied_statement(unit, REGISTRATION, at(32), "s4", authority, LEARNER_ACTOR)
    assert built["verb"]["id"] == SATISFIED_VERB
    assert built["object"]["id"] == unit_activity_id(NESTED) != NESTED
    assert built["object"]["definition"]["type"] == BLOCK_TYPE
    context = built["context"]
    assert context["registration"] == REGISTRATION
    assert context["contextActivities"]["grouping"] == [{"objectType": "Activity", "id": NESTED}]
    assert {"objectType": "Activity", "id": CMI5_CATEGORY} in context["contextActivities"][
        "category"
    ]
    assert session_of(built) == "s4" and built["timestamp"] == at(32)
    assert built["authority"] == authority and built["actor"] == LEARNER_ACTOR
    validate_statement(built)  # a valid xAPI statement as it stands
    # Deterministic: the same registration and unit give the same statement id (stored once).
    again = satisfied_statement(unit, REGISTRATION, at(40), None, authority, LEARNER_ACTOR)
    assert again["id"] == built["id"]
    other = satisfied_statement(unit, str(uuid.uuid4()), at(32), "s4", authority, LEARNER_ACTOR)
    assert other["id"] != built["id"]
    # 9.6.1: no AU session triggered it: a session id of its own, stable, not empty.
    assert session_of(again) and session_of(again) == session_of(
        satisfied_statement(unit, REGISTRATION, at(50), None, authority, LEARNER_ACTOR)
    )
    course_unit = units(course)[0]
    built = satisfied_statement(course_unit, REGISTRATION, at(32), None, authority, LEARNER_ACTOR)
    assert built["object"]["definition"]["type"] == COURSE_TYPE


def test_stored_satisfied_statements_change_no_record() -> None:
    """The LRS's own satisfied statements go through derivation like any other: they must not
    change what they were derived from."""
    trace = [*session(AU1, 0, "s1", COMPLETED, pass_(0.9, 0.8))]
    records, satisfied, course = derive_cmi5(two_blocks(), trace)
    authority = {"objectType": "Agent", "account": {"homePage": "urn:x-lrs", "name": "lrs"}}
    emitted = [
        satisfied_statement(unit, REGISTRATION, satisfied[unit.id], "s1", authority, LEARNER_ACTOR)
        for unit in units(course)
        if unit.id in satisfied
    ]
    assert len(emitted) == 1
    again, satisfied_again, _ = derive_cmi5(two_blocks(), [*trace, *emitted])
    assert again == records and satisfied_again == satisfied


# --- the course structure (cmi5 13) ---------------------------------------------------------


def test_ids_are_unique_in_a_course_structure_13_1_4() -> None:
    tree = {"id": C, "children": [{"block": B1, "children": [au(AU1), au(AU1)]}]}
    with pytest.raises(CourseStructureError, match="used twice"):
        parse_cmi5_course(cmi5_xml(tree))
    tree = {
        "id": C,
        "children": [{"block": B1, "children": [{"block": B1, "children": [au(AU1)]}]}],
    }
    with pytest.raises(CourseStructureError, match="used twice"):
        parse_cmi5_course(cmi5_xml(tree))


def test_imported_cmi5_courses_emit_satisfied_by_default() -> None:
    assert parse_cmi5_course(cmi5_xml(one_au())).emit_satisfied is True


def test_rules_are_registration_agnostic() -> None:
    """The engine passes one registration's statements; given several, the rules derive from
    all of them (the registration is the engine's key, not a rule)."""
    course = parse_cmi5_course(cmi5_xml(one_au("Passed", None)))
    other = cmi5_statement("passed", AU1, 1, result={"success": True})
    other["context"]["registration"] = str(uuid.uuid4())
    assert derive_progress(course.modules[0], CMI5, [other])["status"] == "completed"
    assert satisfied_units(course, {}) == {}


def test_nested_blocks_and_launch_ids_survive_storage_as_json() -> None:
    """The catalogue is stored as plain data (dataclasses.asdict, JSON) and rebuilt with
    Module(**doc): tuples come back as lists and blocks as dicts."""
    course = with_launch_ids(parse_cmi5_course(cmi5_xml(two_blocks())), {AU2: (launch_id(AU2),)})
    for module in course.modules:
        doc = json.loads(json.dumps(asdict(module)))
        back = Module(**doc)
        assert back == module and back.item(launch_id(AU2)) == module.item(launch_id(AU2))
        assert back.activity_ids == module.activity_ids
    assert NESTED in course.modules[1].activity_ids
    assert launch_id(AU2) in course.modules[1].activity_ids


def test_a_json_course_can_ask_for_satisfied_statements() -> None:
    body = {"modules": [{"id": B1, "content": [AU1]}]}
    assert CourseDefinition.model_validate(body).to_course(C).emit_satisfied is False
    body["emit_satisfied"] = True
    assert CourseDefinition.model_validate(body).to_course(C).emit_satisfied is True
