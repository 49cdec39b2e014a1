"""Issue 11, end to end through the API on every back end: a cmi5 course imported from its
cmi5.xml and driven by statements exactly as an AU and its LMS send them (the launch activity
id is never the AU id: cmi5 8.1, 9.4; the AU's publisher id is in grouping: 9.6.2.3), kept per
registration (9.6.1), with one `satisfied` statement stored per block and course (9.3.9); and
the discovered module whose quiz becomes its assessment."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from lrs.progress.cmi5 import SATISFIED_VERB, unit_activity_id
from tests.cmi5_support import LEARNER, LEARNER_ACTOR, REGISTRATION, at, cmi5_statement
from tests.conftest import LRS
from tests.progress_reference import cmi5_xml
from tests.test_cmi5_rules import (
    AU1,
    AU2,
    B1,
    B2,
    COMPLETED,
    NESTED,
    C,
    fail,
    pass_,
    session,
    two_blocks,
)

SECOND = "1b0e3b59-6c06-4c2c-9c55-6e4b1d8f1e2a"


async def _post(lrs: LRS, statements: list[dict[str, Any]]) -> None:
    response = await lrs.client.post("/xapi/statements", json=statements)
    assert response.status_code == 200, response.text
    await lrs.services.dispatcher.idle()


async def _records(lrs: LRS, **params: str) -> dict[str, dict[str, Any]]:
    response = await lrs.client.get("/progress", params={"course": C, **params})
    assert response.status_code == 200, response.text
    return {r["module"]: r for r in response.json()["records"]}


def _item(record: dict[str, Any], item_id: str) -> dict[str, Any]:
    return next(entry for entry in record["items"] if entry["id"] == item_id)


async def _satisfied(lrs: LRS, registration: str) -> list[dict[str, Any]]:
    response = await lrs.client.get(
        "/xapi/statements",
        params={"verb": SATISFIED_VERB, "registration": registration, "limit": "100"},
    )
    assert response.status_code == 200, response.text
    return response.json()["statements"]


def _in_registration(statements: list[dict[str, Any]], registration: str) -> list[dict]:
    for statement in statements:
        statement["context"]["registration"] = registration
    return statements


async def test_a_cmi5_course_as_its_aus_and_lms_send_it_per_registration(lrs: LRS) -> None:
    response = await lrs.client.post("/courses/import", content=cmi5_xml(two_blocks()))
    assert response.status_code == 201, response.text
    await lrs.services.dispatcher.idle()  # imported before anyone is enrolled, as in life
    trace = [
        *session(AU1, 0, "s1", fail(0.6, 0.8)),
        *session(AU1, 10, "s2", COMPLETED, pass_(0.9, 0.8)),
        *session(AU2, 20, "s3", fail(0.5, 0.7)),
        *session(AU2, 30, "s4", pass_(0.75, 0.7)),
    ]
    assert all(s["object"]["id"] not in (AU1, AU2) for s in trace)  # launch activity ids
    # A second enrollment of the same learner, half done, sent after the first.
    again = _in_registration(
        [
            *session(AU1, 100, "s5", COMPLETED, pass_(0.95, 0.8)),
            *session(AU2, 110, "s6", fail(0.2, 0.7)),
        ],
        SECOND,
    )
    await _post(lrs, trace)
    await _post(lrs, again)

    first = await _records(lrs, registration=REGISTRATION)
    assert first[B1]["status"] == "completed" and first[B1]["completed_at"] == at(13)
    assert first[B1]["registration"] == REGISTRATION
    intro = _item(first[B1], AU1)
    assert intro["failed_at"] == at(2) and intro["passed_at"] == at(13)
    assert intro["attempts"] == 2 and intro["status"] == "completed"
    assert first[B2]["status"] == "completed" and first[B2]["completed_at"] == at(32)
    second = await _records(lrs, registration=SECOND)
    assert second[B1]["status"] == "completed" and second[B2]["status"] == "in_progress"
    assert _item(second[B2], AU2)["failed_at"] == at(112)

    # The learner's course view: the registration last active unless one is named.
    path = f"/progress/learners/{quote(LEARNER, safe='')}/courses/{quote(C, safe='')}"
    latest = (await lrs.client.get(path)).json()
    assert latest["registration"] == SECOND and latest["completed"] == 1
    assert latest["registrations"] == [SECOND, REGISTRATION]
    named = (await lrs.client.get(path, params={"registration": REGISTRATION})).json()
    assert named["completed"] == 2 and named["percent"] == 100

    # cmi5 9.3.9: one `satisfied` statement per block (nested ones too) and the course, for
    # the registration that satisfied them, by the LRS, voiding nothing.
    satisfied = await _satisfied(lrs, REGISTRATION)
    by_unit = {s["context"]["contextActivities"]["grouping"][0]["id"]: s for s in satisfied}
    assert sorted(by_unit) == sorted([B1, NESTED, B2, C]) and len(satisfied) == 4
    assert by_unit[B1]["timestamp"] == at(13) and by_unit[C]["timestamp"] == at(32)
    assert by_unit[C]["object"]["id"] == unit_activity_id(C)
    assert by_unit[B1]["actor"] == LEARNER_ACTOR
    assert by_unit[B1]["context"]["extensions"] == {
        "https://w3id.org/xapi/cmi5/context/extensions/sessionid": "s2"
    }
    assert by_unit[B1]["authority"]["account"]["name"] == "lrs"
    assert [s["context"]["contextActivities"]["grouping"][0]["id"] for s in
            await _satisfied(lrs, SECOND)] == [B1]  # fmt: skip

    # Deriving again (a re-sent trace, a rebuild) stores none of them twice.
    await _post(lrs, trace[-3:])
    await lrs.services.deriver.derive_course("default", C)
    await lrs.services.dispatcher.idle()
    assert len(await _satisfied(lrs, REGISTRATION)) == 4

    # ...and they changed no record (but for when it was written).
    def content(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        volatile = ("version", "updated_at", "event_id")
        return {m: {k: v for k, v in r.items() if k not in volatile} for m, r in records.items()}

    assert content(await _records(lrs, registration=REGISTRATION)) == content(first)


async def test_statements_without_the_cmi5_category_are_access_only_7_1_3(lrs: LRS) -> None:
    response = await lrs.client.post("/courses/import", content=cmi5_xml(two_blocks()))
    assert response.status_code == 201
    allowed = cmi5_statement("completed", AU1, 1, defined=False, result={"completion": True})
    await _post(lrs, [allowed])
    record = (await _records(lrs, registration=REGISTRATION))[B1]
    assert record["status"] == "started" and _item(record, AU1)["viewed_at"] is None
    # And no discovered course named after an AU (issue 11 finding 2).
    courses = (await lrs.client.get("/courses")).json()["courses"]
    assert [c["id"] for c in courses] == [C]


M = "http://example.com/discovered/module"
PAGES = [f"{M}/page{i}" for i in range(1, 5)]
QUIZ = f"{M}/quiz"


def _generic(verb: str, obj: str, minute: int, actor: dict[str, Any], **extra: Any) -> dict:
    return {
        "actor": actor,
        "verb": {"id": f"http://adlnet.gov/expapi/verbs/{verb}"},
        "object": {"id": obj},
        "context": {"contextActivities": {"parent": [{"id": M}]}},
        "timestamp": f"2026-01-01T10:{minute:02d}:00Z",
        **extra,
    }


async def test_a_discovered_module_takes_its_quiz_as_the_assessment(lrs: LRS) -> None:
    """Issue 11 finding 3: all four pages viewed, then `passed` on M/quiz (parent M): the
    module stays completed, the quiz is its assessment, not a fifth page to view."""
    ada = {"mbox": "mailto:ada@example.com"}
    bob = {"mbox": "mailto:bob@example.com"}
    await _post(lrs, [_generic("experienced", page, n, ada) for n, page in enumerate(PAGES)])
    await _post(
        lrs, [_generic("experienced", page, 10 + n, bob) for n, page in enumerate(PAGES[:3])]
    )

    async def record(actor: dict[str, Any]) -> dict[str, Any]:
        response = await lrs.client.get(
            "/progress", params={"learner": json.dumps(actor), "module": M}
        )
        return response.json()["records"][0]

    assert (await record(ada))["status"] == "completed"
    passed = _generic("passed", QUIZ, 20, ada, result={"success": True, "score": {"scaled": 0.9}})
    await _post(lrs, [passed])
    mine = await record(ada)
    assert mine["status"] == "completed" and mine["passed"] is True
    assert mine["required"] == 4 and mine["viewed"] == 4 and mine["attempts"] == 1
    # Bob viewed 3 of 4 pages and has not passed the quiz: 3 of 5 requirements.
    theirs = await record(bob)
    assert theirs["status"] == "in_progress" and theirs["required"] == 4
    assert theirs["percent"] == 60
    course = (await lrs.client.get(f"/courses/{quote(M, safe='')}")).json()
    items = {i["id"]: i["role"] for i in course["modules"][0]["items"]}
    assert items[QUIZ] == "assessment" and all(items[p] == "content" for p in PAGES)


async def test_a_round_run_in_units_still_stores_every_satisfied_statement(
    lrs: LRS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog's round runs as several units, each published and let go once written (one
    learner-module pair per unit here): the blocks, and the course they satisfy between them,
    still get their `satisfied` statements, each once."""
    from lrs.progress import deriver

    monkeypatch.setattr(deriver, "_ONE_UNIT", 0)
    monkeypatch.setattr(deriver, "_APPLY_CHUNK", 1)
    await test_a_cmi5_course_as_its_aus_and_lms_send_it_per_registration(lrs)
