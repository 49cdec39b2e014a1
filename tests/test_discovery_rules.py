"""Discovered modules with an assessment (issue 11 "What to build", design notes 3.3): what a
statement discovers, the role of a discovered item, and a discovered module's record, checked
against the reference (tests/progress_reference.py: discovered_plans, record)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from lrs.progress.catalogue import Item, Module
from lrs.progress.discovery import Discovery, Known, discovery, grow, role_of
from lrs.progress.linking import linked_ids
from lrs.progress.rules import Facts, derive_facts, fold, summarize
from lrs.storage.statement_docs import learner_key
from tests.cmi5_support import GENERIC, at, cmi5_statement, launch_id
from tests.progress_reference import (
    ASSESSMENT_TYPE,
    RECORD_FIELDS,
    discovered_plans,
    live_statements,
    record,
)

M = "http://example.com/new-user/m"
PAGES = [f"{M}/page{i}" for i in range(1, 5)]
QUIZ = f"{M}/quiz"
ADL = "http://adlnet.gov/expapi/verbs/"
ADA = {"mbox": "mailto:ada@example.com"}
BOB = {"mbox": "mailto:bob@example.com"}


def stmt(
    verb: str,
    obj: str,
    minute: int,
    actor: dict[str, Any] = ADA,
    *,
    parent: str | None = M,
    result: dict[str, Any] | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "actor": actor,
        "verb": {"id": ADL + verb},
        "object": {"objectType": "Activity", "id": obj},
        "timestamp": at(minute),
    }
    if kind is not None:
        body["object"]["definition"] = {"type": kind}
    if parent is not None:
        body["context"] = {"contextActivities": {"parent": [{"id": parent}]}}
    if result is not None:
        body["result"] = result
    return body


def discover_all(statements: list[dict[str, Any]]) -> dict[str, Module]:
    """What an engine does: for each statement in arrival order, look up what its catalogue
    knows of the statement's linked ids, and apply the discovery."""
    modules: dict[str, Module] = {}
    for statement in statements:
        known: dict[str, Known] = {}
        for activity in linked_ids(statement):
            if activity in modules:
                known[activity] = "module"
            elif any(m.item(activity) for m in modules.values()):
                known[activity] = "item"
        found = discovery(statement, GENERIC, known)
        if found is not None and (grown := grow(modules.get(found.module_id), found)):
            modules[found.module_id] = grown
    return modules


def records(statements: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(learner, module) -> record, from the implementation, checked against the reference."""
    live = live_statements(statements)
    modules = discover_all(statements)
    plans = {p.id: p for p in discovered_plans(statements)}
    assert {
        m: [(i.id, i.role) for i in sorted(modules[m].items, key=lambda i: i.id)] for m in modules
    } == {p: [(i.id, i.role) for i in plan.items] for p, plan in plans.items()}
    found = {}
    for module in modules.values():
        for learner in sorted({learner_key(s) for s in live} - {None}):
            mine = [s for s in live if learner_key(s) == learner]
            got = summarize(module, GENERIC, derive_facts(module, GENERIC, mine))
            assert {f: got[f] for f in RECORD_FIELDS} == record(plans[module.id], learner, live)
            found[(learner, module.id)] = got
    return found


ADA_KEY, BOB_KEY = "mbox:mailto:ada@example.com", "mbox:mailto:bob@example.com"


def test_all_pages_then_a_passed_quiz_completes_with_the_quiz_as_assessment() -> None:
    """Issue 11 finding 3: all 4 pages viewed, then `passed` (score 0.9) on M/quiz with parent M:
    the module ends completed, the quiz its assessment, not a fifth page to view."""
    views = [stmt("completed", page, i) for i, page in enumerate(PAGES)]
    others = [stmt("experienced", page, 10 + i, BOB) for i, page in enumerate(PAGES[:3])]
    before = records([*views, *others])
    assert before[(ADA_KEY, M)]["status"] == "completed"
    assert before[(BOB_KEY, M)]["percent"] == 75
    passed = stmt("passed", QUIZ, 20, result={"success": True, "score": {"scaled": 0.9}})
    after = records([*views, *others, passed])
    ada = after[(ADA_KEY, M)]
    assert ada["status"] == "completed" and ada["completed_at"] == at(20)
    assert ada["required"] == 4 and ada["viewed"] == 4 and ada["passed_at"] == at(20)
    assert ada["attempts"] == 1 and ada["best_score"] == 0.9
    quiz = next(entry for entry in ada["items"] if entry["id"] == QUIZ)
    assert quiz["role"] == "assessment" and quiz["status"] == "completed"
    # Bob's 3 pages of the 4 are 3 of the module's 5 requirements now: the quiz is one of them.
    bob = after[(BOB_KEY, M)]
    assert bob["status"] == "in_progress" and bob["required"] == 4 and bob["percent"] == 60
    assert [e["id"] for e in bob["items"]] == [*PAGES[:3], QUIZ]  # touched items and the quiz
    assert bob["items_total"] == 5 and bob["items_satisfied"] == 3


def test_an_assessment_by_its_definition_type() -> None:
    viewed = stmt("experienced", QUIZ, 1, kind=ASSESSMENT_TYPE)
    assert role_of(GENERIC, viewed) == "assessment"
    module = discover_all([viewed])[M]
    assert module.items == (Item(QUIZ, "assessment", "Passed"),)
    got = records([viewed])[(ADA_KEY, M)]
    assert got["required"] == 0 and got["status"] == "started"


def test_an_assessment_by_a_statement_that_judges_it() -> None:
    assert role_of(GENERIC, stmt("failed", QUIZ, 1)) == "assessment"
    assert role_of(GENERIC, stmt("scored", QUIZ, 1, result={"success": False})) == "assessment"
    assert role_of(GENERIC, stmt("answered", QUIZ, 1, result={"response": "a"})) == "content"
    history = [stmt("experienced", QUIZ, 1), stmt("failed", QUIZ, 2, BOB)]
    module = discover_all(history)[M]
    assert module.items == (Item(QUIZ, "assessment", "Passed"),)
    got = records(history)
    assert got[(ADA_KEY, M)]["status"] == "started"  # viewing the assessment is no progress
    assert got[(BOB_KEY, M)]["attempts"] == 1


def test_an_items_role_never_goes_back_to_content() -> None:
    found = Discovery(M, M, QUIZ, "assessment")
    module = grow(None, found)
    assert module is not None and module.discovered and module.items[0].role == "assessment"
    assert grow(module, replace(found, role="content")) is None
    assert grow(module, found) is None
    page = grow(module, Discovery(M, M, PAGES[0], "content"))
    assert page is not None and [i.id for i in page.items] == [QUIZ, PAGES[0]]
    partly = replace(module, item_total=7)
    assert grow(partly, Discovery(M, M, PAGES[0], "content")).item_total == 8  # type: ignore[union-attr]


def test_completed_on_the_module_activity_means_its_content_is_done() -> None:
    history = [
        stmt("experienced", PAGES[0], 1, BOB),
        stmt("experienced", PAGES[1], 2, BOB),
        stmt("experienced", PAGES[0], 3),
        stmt("completed", M, 5, parent=None),
    ]
    got = records(history)[(ADA_KEY, M)]
    assert got["status"] == "completed" and got["completed_at"] == at(5)
    assert got["viewed_ids"] == [PAGES[0]]
    assert records(history[:3])[(ADA_KEY, M)]["status"] == "in_progress"


def test_passed_on_the_module_activity_means_its_assessment_is_passed() -> None:
    history = [
        stmt("failed", QUIZ, 1, BOB),  # makes the quiz the assessment
        stmt("experienced", PAGES[0], 2),
        stmt("passed", M, 4, parent=None, result={"score": {"scaled": 0.7}}),
    ]
    got = records(history)[(ADA_KEY, M)]
    assert got["status"] == "completed" and got["completed_at"] == at(4)
    assert got["passed"] and got["passed_at"] == at(4)
    assert got["attempts"] == 1 and got["best_score"] == 0.7
    quiz = next(entry for entry in got["items"] if entry["id"] == QUIZ)
    assert quiz["status"] == "not_started"  # the quiz itself: not taken


def test_the_module_activity_is_never_an_item() -> None:
    assert discovery(stmt("completed", M, 1, parent=None), GENERIC, {}) is None
    assert discovery(stmt("completed", M, 1, parent=M), GENERIC, {}) is None
    assert discovery(stmt("completed", M, 1, parent=f"{M}/course"), GENERIC, {M: "module"}) is None


def test_discovery_takes_the_parent_then_the_grouping_as_module() -> None:
    course = "http://example.com/new-user/course"
    with_course = stmt("completed", PAGES[0], 1)
    with_course["context"]["contextActivities"]["grouping"] = [{"id": course}]
    assert discovery(with_course, GENERIC, {}) == Discovery(course, M, PAGES[0], "content")
    grouped = stmt("completed", PAGES[0], 1, parent=None)
    grouped["context"] = {"contextActivities": {"grouping": [{"id": M}]}}
    assert discovery(grouped, GENERIC, {}) == Discovery(M, M, PAGES[0], "content")
    assert discovery(stmt("completed", PAGES[0], 1, parent=None), GENERIC, {}) is None


def test_a_known_item_is_neither_module_nor_course() -> None:
    question = stmt("answered", f"{QUIZ}/q1", 1, parent=QUIZ)
    assert discovery(question, GENERIC, {QUIZ: "item"}) is None
    question["context"]["contextActivities"]["parent"].append({"id": M})
    found = discovery(question, GENERIC, {QUIZ: "item"})
    assert found == Discovery(M, M, f"{QUIZ}/q1", "content")


def test_defined_activities_are_never_discovered_again() -> None:
    """Issue 11 finding 2: an item, module or course of a defined course is never discovered."""
    statement = stmt("completed", PAGES[0], 1)
    statement["context"]["contextActivities"]["grouping"] = [{"id": "http://example.com/c"}]
    for activity in linked_ids(statement):
        assert discovery(statement, GENERIC, {activity: "defined"}) is None
    assert discovery(statement, GENERIC, {}) is not None


def test_a_cmi5_grouping_is_never_a_module_to_discover() -> None:
    """Issue 11 finding 2: the AU ids in a cmi5 grouping (9.6.2.3) made junk courses."""
    au = "http://example.com/au-intro"
    for statement in (
        cmi5_statement("initialized", au, 1),
        cmi5_statement("completed", au, 2, defined=False),  # allowed: the template's session id
    ):
        assert linked_ids(statement) == [launch_id(au), au]
        assert discovery(statement, GENERIC, {}) is None
        statement["context"]["contextActivities"]["parent"] = [{"id": M}]
        found = discovery(statement, GENERIC, {})
        assert found == Discovery(M, M, launch_id(au), "content")


def test_a_role_change_keeps_every_fact() -> None:
    """Facts do not depend on roles: folded while the quiz was content, summarized once it is
    the assessment, they give what deriving afresh gives."""
    history = [stmt("experienced", page, i) for i, page in enumerate(PAGES)]
    history.append(stmt("attempted", QUIZ, 8, result={"score": {"scaled": 0.4}}))
    as_content = discover_all(history)[M]
    assert as_content.item(QUIZ).role == "content"  # type: ignore[union-attr]
    facts = Facts()
    for statement in history:
        folded = fold(as_content, GENERIC, facts, statement)
        assert folded is not None
        facts = folded
    judged = stmt("passed", QUIZ, 9, BOB)
    as_assessment = discover_all([*history, judged])[M]
    assert as_assessment.item(QUIZ).role == "assessment"  # type: ignore[union-attr]
    again = derive_facts(as_assessment, GENERIC, history)
    assert facts.to_doc() == again.to_doc()
    got = summarize(as_assessment, GENERIC, facts)
    assert got == summarize(as_assessment, GENERIC, again)
    assert got["status"] == "in_progress" and got["attempts"] == 1 and got["best_score"] == 0.4
