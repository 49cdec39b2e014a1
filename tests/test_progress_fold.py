"""Incremental derivation (lrs.progress.rules): folding a learner's statements into stored facts
one at a time, in any order and any number of times, gives the same facts, and so the same
record, as deriving from all of them at once. A reset that moves the barrier is the one
statement that cannot be folded: `fold` says so, and the caller recomputes."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lrs.progress.catalogue import CourseDefinition, Module
from lrs.progress.profiles import load_profiles
from lrs.progress.rules import Facts, derive_facts, fold, summarize
from lrs.storage.statement_docs import learner_key
from tests.progress_reference import RESET_VERB, live_statements
from tests.test_progress_properties import (
    COURSE,
    PROPERTY_SETTINGS,
    course_definitions,
    histories,
)

GENERIC = load_profiles().get("generic")


def _modules(definition: dict[str, Any]) -> list[Module]:
    return list(CourseDefinition.model_validate(definition).to_course(COURSE).modules)


def _by_learner(statements: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for statement in statements:
        if (learner := learner_key(statement)) is not None:
            found.setdefault(learner, []).append(statement)
    return found


def _fold_all(module: Module, statements: list[dict[str, Any]]) -> Facts:
    """What an incremental deriver does: fold one statement at a time into facts that went
    through storage (to_doc/from_doc) in between, recomputing when fold says it must."""
    facts = Facts()
    seen: list[dict[str, Any]] = []
    for statement in statements:
        seen.append(statement)
        folded = fold(module, GENERIC, Facts.from_doc(facts.to_doc()), statement)
        facts = folded if folded is not None else derive_facts(module, GENERIC, seen)
    return facts


@PROPERTY_SETTINGS
@given(data=st.data())
def test_folding_in_any_order_with_duplicates_equals_deriving_at_once(
    data: st.DataObject,
) -> None:
    definition = data.draw(course_definitions(), "course")
    live = live_statements(data.draw(histories(definition), "statements"))
    rng = random.Random(data.draw(st.integers(0, 2**32), "order seed"))
    for module in _modules(definition):
        for statements in _by_learner(live).values():
            sends = statements + rng.sample(statements, min(len(statements), 3))
            rng.shuffle(sends)
            whole = derive_facts(module, GENERIC, statements)
            folded = _fold_all(module, sends)
            assert folded.to_doc() == whole.to_doc()
            assert summarize(module, GENERIC, folded) == summarize(module, GENERIC, whole)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_fold_refuses_only_a_reset_that_moves_the_barrier(data: st.DataObject) -> None:
    definition = data.draw(course_definitions(), "course")
    live = live_statements(data.draw(histories(definition), "statements"))
    for module in _modules(definition):
        for statements in _by_learner(live).values():
            facts = Facts()
            for statement in sorted(statements, key=lambda s: s["timestamp"]):
                before = facts.to_doc()
                folded = fold(module, GENERIC, Facts.from_doc(before), statement)
                if folded is None:
                    assert statement["verb"]["id"] == RESET_VERB
                    assert statement["object"]["id"] == module.id
                    assert facts.started is not None
                    facts = derive_facts(module, GENERIC, [statement])
                else:
                    facts = folded


def test_a_module_that_gains_items_keeps_every_fact() -> None:
    """Facts about an item depend on that item only: a discovered module that grows is
    re-summarized from the stored facts, its statements unread."""
    page = f"{COURSE}/d/page"
    small = Module(COURSE, f"{COURSE}/d", "", (), discovered=True)
    from lrs.progress.catalogue import Item

    grown = Module(
        COURSE,
        small.id,
        "",
        (Item(page + "1", "content", "Completed"), Item(page + "2", "content", "Completed")),
        discovered=True,
    )
    statements = [
        {
            "id": f"00000000-0000-4000-8000-00000000000{i}",
            "actor": {"mbox": "mailto:a@example.com"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
            "object": {"id": page + str(i)},
            "context": {"contextActivities": {"parent": [{"id": small.id}]}},
            "timestamp": f"2026-01-01T10:0{i}:00Z",
        }
        for i in (1, 2)
    ]
    one_item = Module(COURSE, small.id, "", grown.items[:1], discovered=True)
    facts = fold(one_item, GENERIC, Facts(), statements[0])
    assert facts is not None
    assert summarize(one_item, GENERIC, facts)["status"] == "completed"
    assert summarize(grown, GENERIC, facts)["status"] == "in_progress"
    facts = fold(grown, GENERIC, facts, statements[1])
    assert facts is not None
    assert summarize(grown, GENERIC, facts) == summarize(
        grown, GENERIC, derive_facts(grown, GENERIC, statements)
    )
    assert summarize(grown, GENERIC, facts)["status"] == "completed"


@PROPERTY_SETTINGS
@given(data=st.data())
def test_a_partly_loaded_module_summarizes_as_the_whole(data: st.DataObject) -> None:
    """A module loaded with only its assessments and the items the learner has facts about,
    plus its `item_total`, gives the same record as the whole module (how the engine reads a
    large discovered module; only discovered modules are loaded so: their `items` list shows
    the items the learner has facts about, and the assessments)."""
    definition = data.draw(course_definitions(), "course")
    live = live_statements(data.draw(histories(definition), "statements"))
    for defined in _modules(definition):
        module = replace(defined, discovered=True)
        for statements in _by_learner(live).values():
            facts = derive_facts(module, GENERIC, statements)
            partial = replace(
                module,
                items=tuple(
                    i for i in module.items if i.role == "assessment" or i.id in facts.items
                ),
                item_total=len(module.items),
            )
            assert summarize(partial, GENERIC, facts) == summarize(module, GENERIC, facts)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_facts_do_not_depend_on_roles_nor_on_other_items(data: st.DataObject) -> None:
    """Issue 11: a discovered item can become the assessment, and a discovered module gains
    items; neither may change a learner's facts, or stored facts would go stale. Facts of a
    module whose roles are swapped, or from which other items are missing, are the same."""
    definition = data.draw(course_definitions(), "course")
    live = live_statements(data.draw(histories(definition), "statements"))
    for module in _modules(definition):
        swapped = replace(
            module,
            items=tuple(
                replace(i, role="assessment" if i.role == "content" else "content")
                for i in module.items
            ),
        )
        for statements in _by_learner(live).values():
            whole = derive_facts(module, GENERIC, statements).to_doc()
            assert derive_facts(swapped, GENERIC, statements).to_doc() == whole
            for item in module.items:
                alone = replace(module, items=(item,))
                facts = derive_facts(alone, GENERIC, statements).to_doc()
                assert facts["items"].get(item.id) == whole["items"].get(item.id)
