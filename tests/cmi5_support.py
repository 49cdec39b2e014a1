"""Shared by the cmi5 and discovery rule tests: statements shaped as a cmi5 AU and LMS send
them (cmi5 8.1, 9.3, 9.4, 9.6), and the implementation's records next to the reference's."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from lrs.progress.catalogue import Course, Module, parse_cmi5_course
from lrs.progress.cmi5 import satisfied_units
from lrs.progress.profiles import load_profiles
from lrs.progress.rules import derive_progress
from tests.progress_reference import (
    CMI5_CATEGORY,
    CMI5_MASTERY,
    CMI5_SESSION,
    RECORD_FIELDS,
    cmi5_plans,
    cmi5_units,
    cmi5_xml,
    live_statements,
    record,
)

PROFILES = load_profiles()
CMI5 = PROFILES.get("cmi5")
GENERIC = PROFILES.get("generic")
ADL = "http://adlnet.gov/expapi/verbs/"
W3ID = "https://w3id.org/xapi/adl/verbs/"
MOVEON_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/moveon"
BASE = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
LEARNER_ACTOR = {
    "objectType": "Agent",
    "account": {"homePage": "http://lms.example.com", "name": "ada"},
}
LEARNER = "account:http://lms.example.com|ada"
REGISTRATION = "760e3480-ba55-4991-94b0-01820dbd23a2"

_ids = itertools.count(1)


def at(minute: float) -> str:
    """The API's form of BASE + minutes."""
    return (BASE + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def launch_id(au: str) -> str:
    """The activity id the LMS generated for launching `au` (cmi5 8.1: never the AU id)."""
    return f"https://lms.example.com/launch/{uuid.uuid5(uuid.NAMESPACE_URL, au)}"


def cmi5_statement(
    verb: str,
    au: str,
    minute: float,
    *,
    session: str = "s1",
    defined: bool = True,
    grouping: bool = True,
    obj: str | None = None,
    result: dict[str, Any] | None = None,
    mastery: float | None = None,
    actor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A statement about `au` built on its context template: object the launch activity id
    (cmi5 9.4), the AU's publisher id in grouping (9.6.2.3), the registration (9.6.1), the
    session id (9.6.3.1); with the cmi5 category when `defined` (9.6.2.1), the moveOn category
    when the result has success or completion (9.6.2.2)."""
    categories = []
    if defined:
        categories.append({"id": CMI5_CATEGORY})
        if result and ("success" in result or "completion" in result):
            categories.append({"id": MOVEON_CATEGORY})
    activities: dict[str, Any] = {}
    if grouping:
        activities["grouping"] = [{"id": au}]
    if categories:
        activities["category"] = categories
    extensions: dict[str, Any] = {CMI5_SESSION: session}
    if mastery is not None:
        extensions[CMI5_MASTERY] = mastery
    stamp = (BASE + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    statement: dict[str, Any] = {
        "id": str(uuid.UUID(int=next(_ids))),
        "actor": actor or LEARNER_ACTOR,
        "verb": {"id": verb if ":" in verb else (W3ID if verb in _W3ID else ADL) + verb},
        "object": {"objectType": "Activity", "id": obj or launch_id(au)},
        "context": {
            "registration": REGISTRATION,
            "contextActivities": activities,
            "extensions": extensions,
        },
        "timestamp": stamp,
    }
    if result is not None:
        statement["result"] = result
    return statement


_W3ID = {"abandoned", "waived", "satisfied"}


def void(statement: dict[str, Any], minute: float) -> dict[str, Any]:
    stamp = (BASE + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": str(uuid.UUID(int=next(_ids))),
        "actor": statement["actor"],
        "verb": {"id": ADL + "voided"},
        "object": {"objectType": "StatementRef", "id": statement["id"]},
        "timestamp": stamp,
    }


def with_launch_ids(course: Course, launch_ids: dict[str, tuple[str, ...]]) -> Course:
    """The course with launch activity ids registered for its AUs (what an engine does)."""
    modules = tuple(
        replace(
            module,
            items=tuple(
                replace(item, launch_ids=launch_ids.get(item.id, ())) for item in module.items
            ),
        )
        for module in course.modules
    )
    return replace(course, modules=modules)


def derive_cmi5(
    tree: dict[str, Any],
    statements: list[dict[str, Any]],
    launch_ids: dict[str, tuple[str, ...]] | None = None,
    learner: str = LEARNER,
) -> tuple[dict[str, dict[str, Any]], dict[str, str], Course]:
    """Each module's record and the satisfied units, from the implementation, after checking
    that both agree with the reference on every field it predicts."""
    course = with_launch_ids(parse_cmi5_course(cmi5_xml(tree)), launch_ids or {})
    live = live_statements(statements)
    mine = [s for s in live if _learner(s) == learner]
    records = {m.id: derive_progress(m, CMI5, mine) for m in course.modules}
    plans = {p.id: p for p in cmi5_plans(tree, launch_ids)}
    assert set(plans) == set(records)
    for module_id, got in records.items():
        want = record(plans[module_id], learner, live)
        assert {f: got[f] for f in RECORD_FIELDS} == want, module_id
    units = satisfied_units(course, records)
    assert units == cmi5_units(tree, learner, live, launch_ids)
    return records, units, course


def _learner(statement: dict[str, Any]) -> str | None:
    from lrs.storage.statement_docs import learner_key

    return learner_key(statement)


def derive_module(module: Module, statements: list[dict[str, Any]]) -> dict[str, Any]:
    return derive_progress(module, PROFILES.get(module.profile), live_statements(statements))
