"""Issue 11 as properties: on random cmi5 course structures with random histories of AU and LMS
statements, and on random discovered modules, the rules (derived at once, or folded one
statement at a time in any order with duplicates) give what the independent reference
(tests/progress_reference.py) gives: every record field, every item, every satisfied block and
course."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lrs.progress.catalogue import Module, parse_cmi5_course
from lrs.progress.cmi5 import satisfied_units, unit_activity_id
from lrs.progress.profiles import Profile
from lrs.progress.rules import Facts, derive_facts, fold, summarize
from lrs.storage.statement_docs import learner_key
from tests.cmi5_support import CMI5, GENERIC, MOVEON_CATEGORY, launch_id, with_launch_ids
from tests.progress_reference import (
    ADL,
    ASSESSMENT_TYPE,
    CMI5_CATEGORY,
    CMI5_MASTERY,
    CMI5_SESSION,
    RECORD_FIELDS,
    RESET_VERB,
    SATISFIED_VERB,
    VOID_VERB,
    WAIVE_VERB,
    cmi5_plans,
    cmi5_units,
    cmi5_xml,
    discovered_plans,
    live_statements,
    record,
)
from tests.test_discovery_rules import discover_all
from tests.test_progress_properties import BASE, LEARNERS, PROPERTY_SETTINGS

C = "https://example.com/prop/cmi5"
W3ID = "https://w3id.org/xapi/adl/verbs/"
MOVE_ONS = ["Completed", "Passed", "CompletedAndPassed", "CompletedOrPassed", "NotApplicable"]
SCORES = [None, 0.0, 0.5, 0.79, 0.8, 1.0]

Statement = dict[str, Any]


def _stamp(draw: st.DrawFn) -> str:
    """Few distinct instants, so that ties are common."""
    moment = BASE + timedelta(minutes=draw(st.integers(0, 12)))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fold_in_any_order(
    module: Module, profile: Profile, statements: list[Statement], rng: random.Random
) -> Facts:
    """What an incremental engine does: fold one statement at a time, in a random order with
    some sent twice, into facts that went through storage in between; recompute from the
    statements seen so far when fold says it must."""
    sends = statements + rng.sample(statements, min(len(statements), 3))
    rng.shuffle(sends)
    facts = Facts()
    seen: list[Statement] = []
    for statement in sends:
        seen.append(statement)
        folded = fold(module, profile, Facts.from_doc(facts.to_doc()), statement)
        facts = folded if folded is not None else derive_facts(module, profile, seen)
    return facts


def _by_learner(statements: list[Statement]) -> dict[str, list[Statement]]:
    found: dict[str, list[Statement]] = {}
    for statement in statements:
        if (learner := learner_key(statement)) is not None:
            found.setdefault(learner, []).append(statement)
    return found


# --- cmi5 ----------------------------------------------------------------------------------------


@st.composite
def cmi5_trees(draw: st.DrawFn) -> dict[str, Any]:
    """A course of 1-3 nodes; a block holds 1-3 nodes, nested at most two deep."""
    counter = iter(range(100))

    def au() -> dict[str, Any]:
        node: dict[str, Any] = {"au": f"{C}/au{next(counter)}"}
        move_on = draw(st.sampled_from([None, *MOVE_ONS]))
        if move_on is not None:
            node["moveOn"] = move_on
        node["masteryScore"] = draw(st.sampled_from([None, 0.5, 0.8]))
        return node

    def nodes(depth: int) -> list[dict[str, Any]]:
        found = []
        for _ in range(draw(st.integers(1, 3))):
            if depth < 2 and draw(st.integers(0, 2)) == 0:
                found.append({"block": f"{C}/block{next(counter)}", "children": nodes(depth + 1)})
            else:
                found.append(au())
        return found

    children = nodes(0)
    if not any("block" in c for c in children) and draw(st.booleans()):
        children.append({"block": f"{C}/block{next(counter)}", "children": nodes(1)})
    return {"id": C, "title": "cmi5 properties", "children": children}


def _aus(tree: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for child in tree["children"]:
        found += [child["au"]] if "au" in child else _aus(child)
    return found


def _blocks(tree: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for child in tree["children"]:
        if "block" in child:
            found += [child["block"], *_blocks(child)]
    return found


CMI5_KINDS = [
    "session",
    "session",
    "completed",
    "completed",
    "passed",
    "passed",
    "failed",
    "waived",
    "satisfied",
    "allowed",
    "module-waiver",
    "reset",
    "void",
]


@st.composite
def cmi5_histories(draw: st.DrawFn, tree: dict[str, Any]) -> list[Statement]:
    """Statements as AUs and an LMS send them, about the AUs of `tree`: mostly linked as cmi5
    asks (launch activity id as object, publisher id in grouping), sometimes by the AU id as
    object or by a (registered or not) launch id alone; allowed statements; LMS satisfied
    statements; progress API waivers and resets of modules; voids."""
    aus = _aus(tree)
    modules = [p.id for p in cmi5_plans(tree)]
    learners = LEARNERS[: draw(st.integers(1, 2))]
    statements: list[Statement] = []
    for index in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(CMI5_KINDS))
        au = draw(st.sampled_from(aus))
        actor = draw(st.sampled_from(learners))
        body: Statement = {"id": str(uuid.UUID(int=index + 1)), "actor": actor}
        body["timestamp"] = _stamp(draw)
        if kind == "void":
            targets = [s for s in statements if s["verb"]["id"] != VOID_VERB]
            if not targets:
                continue
            voided = draw(st.sampled_from(targets))
            body.update(
                actor=voided["actor"],
                verb={"id": VOID_VERB},
                object={"objectType": "StatementRef", "id": voided["id"]},
            )
            statements.append(body)
            continue
        if kind in ("module-waiver", "reset"):
            body["verb"] = {"id": WAIVE_VERB if kind == "module-waiver" else RESET_VERB}
            body["object"] = {"objectType": "Activity", "id": draw(st.sampled_from(modules))}
            body["context"] = {"contextActivities": {"grouping": [{"id": C}]}}
            if kind == "module-waiver":
                body["result"] = {"success": True, "completion": True}
            statements.append(body)
            continue
        scaled = draw(st.sampled_from(SCORES))
        result: dict[str, Any] | None = None
        if kind == "session":
            verb = ADL + draw(st.sampled_from(["launched", "initialized", "terminated"]))
            verb = draw(st.sampled_from([verb, W3ID + "abandoned"]))
        elif kind == "completed":
            verb, result = ADL + "completed", {"completion": True}
        elif kind in ("passed", "failed"):
            verb = ADL + kind
            result = {"success": kind == "passed"}
            if scaled is not None:
                result["score"] = {"scaled": scaled}
        elif kind == "waived":
            verb, result = W3ID + "waived", {"success": True, "completion": True}
        elif kind == "satisfied":
            verb = SATISFIED_VERB
        else:  # allowed: any verb, no cmi5 category
            verb = ADL + draw(st.sampled_from(["completed", "passed", "answered", "experienced"]))
            if draw(st.booleans()):
                result = {"success": True, "completion": True}
        link = draw(st.sampled_from(["grouping", "grouping", "grouping", "au", "launch"]))
        obj = {"au": au, "launch": launch_id(au), "grouping": launch_id(au)}[link]
        grouping = [{"id": au}] if link == "grouping" else []
        if kind == "satisfied":
            unit = draw(st.sampled_from([C, *_blocks(tree)]))
            obj, grouping = unit_activity_id(unit), [{"id": unit}]
        if kind == "allowed" and draw(st.booleans()):
            obj = f"{au}/question"
        categories = [] if kind == "allowed" else [{"id": CMI5_CATEGORY}]
        if result and categories:
            categories.append({"id": MOVEON_CATEGORY})
        extensions: dict[str, Any] = {CMI5_SESSION: f"session-{draw(st.integers(0, 3))}"}
        if kind in ("passed", "failed") and draw(st.integers(0, 3)) == 0:
            extensions[CMI5_MASTERY] = draw(st.sampled_from([0.5, 0.9]))
        activities: dict[str, Any] = {}
        if grouping:
            activities["grouping"] = grouping
        if categories:
            activities["category"] = categories
        body["verb"] = {"id": verb}
        body["object"] = {"objectType": "Activity", "id": obj}
        body["context"] = {
            "registration": "d0b5e9a4-54d8-4f0a-8b1f-6c3f0b7f4c11",
            "contextActivities": activities,
            "extensions": extensions,
        }
        if result is not None:
            body["result"] = result
        statements.append(body)
    return statements


@PROPERTY_SETTINGS
@given(data=st.data())
def test_cmi5_progress_matches_reference(data: st.DataObject) -> None:
    """Per module, per item, per block and course: the rules equal the reference, derived at
    once or folded in any order with duplicates."""
    tree = data.draw(cmi5_trees(), "course")
    registered = set(data.draw(st.lists(st.sampled_from(_aus(tree)), unique=True), "launch ids"))
    launch_ids = {au: (launch_id(au),) for au in registered}
    statements = data.draw(cmi5_histories(tree), "statements")
    rng = random.Random(data.draw(st.integers(0, 2**32), "order seed"))
    course = with_launch_ids(parse_cmi5_course(cmi5_xml(tree)), launch_ids)
    plans = {p.id: p for p in cmi5_plans(tree, launch_ids)}
    live = live_statements(statements)
    for learner, mine in _by_learner(live).items():
        summaries = {}
        for module in course.modules:
            facts = derive_facts(module, CMI5, mine)
            got = summarize(module, CMI5, facts)
            assert {f: got[f] for f in RECORD_FIELDS} == record(plans[module.id], learner, live)
            folded = _fold_in_any_order(module, CMI5, mine, rng)
            assert folded.to_doc() == facts.to_doc()
            summaries[module.id] = got
        assert satisfied_units(course, summaries) == cmi5_units(tree, learner, live, launch_ids)


# --- discovered modules -------------------------------------------------------------------------

DISCOVERED = "http://example.com/prop/discovered"
DISCOVERED_KINDS = [
    "view",
    "view",
    "view",
    "attempt",
    "judge",
    "judge",
    "typed",
    "own-completed",
    "own-passed",
    "access",
    "waive",
    "reset",
    "void",
]


@st.composite
def discovered_histories(draw: st.DrawFn) -> list[Statement]:
    """Statements of new users' content without a course definition: pages and a quiz under
    1-2 modules named as parent (each module always in the same course, or in none); views,
    attempts, judgements (which make the item the assessment), items typed as assessments,
    `completed` and `passed` on a module's own activity, waivers, resets, voids."""
    modules = [f"{DISCOVERED}/m{m}" for m in range(draw(st.integers(1, 2)))]
    courses = {m: draw(st.sampled_from([None, f"{DISCOVERED}/course"])) for m in modules}
    learners = LEARNERS[: draw(st.integers(1, 3))]
    statements: list[Statement] = []
    for index in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(DISCOVERED_KINDS))
        module = draw(st.sampled_from(modules))
        items = [f"{module}/page{i}" for i in range(3)] + [f"{module}/quiz"]
        target = draw(st.sampled_from(items))
        body: Statement = {
            "id": str(uuid.UUID(int=index + 1)),
            "actor": draw(st.sampled_from(learners)),
            "timestamp": _stamp(draw),
        }
        result: dict[str, Any] | None = None
        scaled = draw(st.sampled_from(SCORES))
        own = kind in ("own-completed", "own-passed", "access", "waive", "reset")
        if kind == "void":
            targets = [s for s in statements if s["verb"]["id"] != VOID_VERB]
            if not targets:
                continue
            voided = draw(st.sampled_from(targets))
            body.update(
                actor=voided["actor"],
                verb={"id": VOID_VERB},
                object={"objectType": "StatementRef", "id": voided["id"]},
            )
            statements.append(body)
            continue
        if kind == "view":
            verb = ADL + draw(st.sampled_from(["completed", "experienced", "progressed"]))
            if verb == ADL + "progressed" or draw(st.booleans()):
                result = {"completion": verb != ADL + "progressed" or draw(st.booleans())}
        elif kind == "attempt":
            verb = ADL + draw(st.sampled_from(["attempted", "answered"]))
            result = None if scaled is None else {"score": {"scaled": scaled}}
        elif kind == "judge":
            verb = ADL + draw(st.sampled_from(["passed", "failed", "scored"]))
            result = {"success": verb != ADL + "failed"}
            if verb == ADL + "scored":
                result["success"] = draw(st.booleans())
            if scaled is not None:
                result["score"] = {"scaled": scaled}
        elif kind == "typed":
            verb = ADL + draw(st.sampled_from(["experienced", "launched"]))
        elif kind == "own-completed":
            verb, result = ADL + "completed", draw(st.sampled_from([None, {"completion": True}]))
        elif kind == "own-passed":
            verb = ADL + draw(st.sampled_from(["passed", "failed", "scored"]))
            result = None if scaled is None else {"score": {"scaled": scaled}}
        elif kind == "access":
            verb = ADL + "launched"
        elif kind == "waive":
            verb, result = WAIVE_VERB, {"success": True, "completion": True}
        else:
            verb = RESET_VERB
        body["verb"] = {"id": verb}
        body["object"] = {"objectType": "Activity", "id": module if own else target}
        if kind == "typed":
            body["object"]["definition"] = {"type": ASSESSMENT_TYPE}
        if not own:
            activities: dict[str, Any] = {"parent": [{"id": module}]}
            if courses[module]:
                activities["grouping"] = [{"id": courses[module]}]
            body["context"] = {"contextActivities": activities}
        if result is not None:
            body["result"] = result
        statements.append(body)
    return statements


@PROPERTY_SETTINGS
@given(data=st.data())
def test_discovered_progress_matches_reference(data: st.DataObject) -> None:
    """Discovery in any arrival order gives the same modules and roles as the reference; each
    learner's record of each equals the reference's, derived at once or folded in any order
    with duplicates (against the final catalogue: a role change changes no fact), and a module
    loaded partly gives the same record."""
    statements = data.draw(discovered_histories(), "statements")
    rng = random.Random(data.draw(st.integers(0, 2**32), "order seed"))
    arrival = rng.sample(statements, len(statements))
    modules = discover_all(arrival)
    plans = {p.id: p for p in discovered_plans(statements)}
    assert sorted(modules) == sorted(plans)
    live = live_statements(statements)
    for module in modules.values():
        plan = plans[module.id]
        assert module.course_id == plan.course
        assert sorted((i.id, i.role) for i in module.items) == [(i.id, i.role) for i in plan.items]
        for learner, mine in _by_learner(live).items():
            facts = derive_facts(module, GENERIC, mine)
            got = summarize(module, GENERIC, facts)
            assert {f: got[f] for f in RECORD_FIELDS} == record(plan, learner, live)
            assert _fold_in_any_order(module, GENERIC, mine, rng).to_doc() == facts.to_doc()
            partial = replace(
                module,
                items=tuple(
                    i for i in module.items if i.role == "assessment" or i.id in facts.items
                ),
                item_total=len(module.items),
            )
            assert summarize(partial, GENERIC, facts) == got
