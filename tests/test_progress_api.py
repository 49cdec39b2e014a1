"""The course catalogue and the progress API (issue 4), on the in-process derivation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

from lrs.events import EventBus
from lrs.progress.deriver import public_record
from lrs.xapi.jsontext import compact_json_bytes
from tests.conftest import LRS

COURSE = "http://example.com/courses/safety"
M1 = "http://example.com/courses/safety/m1"
M2 = "http://example.com/courses/safety/m2"
PAGE1 = "http://example.com/content/page1"
PAGE2 = "http://example.com/content/page2"
QUIZ = "http://example.com/content/quiz1"
VIDEO = "http://example.com/content/video1"
LEARNER = {"objectType": "Agent", "mbox": "mailto:ada@example.com", "name": "Ada"}
OTHER = {"objectType": "Agent", "mbox": "mailto:bob@example.com", "name": "Bob"}

VERBS = "http://adlnet.gov/expapi/verbs/"


def course_definition() -> dict:
    return {
        "title": "Safety",
        "modules": [
            {
                "id": M1,
                "title": "Basics",
                "content": [PAGE1, PAGE2],
                "assessment": QUIZ,
                "mastery_score": 0.8,
            },
            {"id": M2, "title": "Video", "content": [VIDEO], "profile": "video"},
        ],
    }


def stmt(
    verb: str,
    obj: str,
    *,
    actor: dict = LEARNER,
    ts: str = "2026-01-01T10:00:00Z",
    result: dict | None = None,
    parent: str | None = None,
) -> dict:
    body: dict = {
        "actor": actor,
        "verb": {"id": verb if verb.startswith("http") else VERBS + verb},
        "object": {"objectType": "Activity", "id": obj},
        "timestamp": ts,
    }
    if result is not None:
        body["result"] = result
    if parent:
        body["context"] = {"contextActivities": {"parent": [{"id": parent}]}}
    return body


async def put_course(lrs: LRS, definition: dict | None = None) -> None:
    response = await lrs.client.put(
        f"/courses/{quote(COURSE, safe='')}", json=definition or course_definition()
    )
    assert response.status_code in (200, 201), response.text


async def settle(lrs: LRS) -> None:
    await lrs.services.dispatcher.idle()


async def record(lrs: LRS, module: str, learner: dict = LEARNER) -> dict:
    response = await lrs.client.get(
        "/progress", params={"learner": json.dumps(learner), "module": module}
    )
    assert response.status_code == 200
    records = response.json()["records"]
    return records[0] if records else {"status": "not_started"}


async def post(lrs: LRS, *statements: dict) -> list[str]:
    response = await lrs.client.post("/xapi/statements", json=list(statements))
    assert response.status_code == 200, response.text
    await settle(lrs)
    return response.json()


async def test_course_crud_and_validation(lrs: LRS) -> None:
    await put_course(lrs)
    listed = (await lrs.client.get("/courses")).json()["courses"]
    assert [c["id"] for c in listed] == [COURSE]
    got = await lrs.client.get(f"/courses/{quote(COURSE, safe='')}")
    assert [m["id"] for m in got.json()["modules"]] == [M1, M2]
    bad = await lrs.client.put(
        f"/courses/{quote(COURSE, safe='')}", json={"modules": [{"id": "not an iri"}]}
    )
    assert bad.status_code == 400 and "IRI" in bad.text
    unknown_profile = course_definition()
    unknown_profile["profile"] = "nope"
    bad = await lrs.client.put(f"/courses/{quote(COURSE, safe='')}", json=unknown_profile)
    assert bad.status_code == 400
    assert (await lrs.client.delete(f"/courses/{quote(COURSE, safe='')}")).status_code == 204
    assert (await lrs.client.get(f"/courses/{quote(COURSE, safe='')}")).status_code == 404


async def test_statuses_follow_the_rules(lrs: LRS) -> None:
    """Design 5: started on access, in_progress after a view, completed when every required
    item is viewed and the assessment passed; completed_at from statement times."""
    await put_course(lrs)
    await post(lrs, stmt("launched", M1, ts="2026-01-01T09:00:00Z"))
    first = await record(lrs, M1)
    assert first["status"] == "started"
    assert first["started_at"] == "2026-01-01T09:00:00.000000Z"
    await post(lrs, stmt("experienced", PAGE1, ts="2026-01-01T09:10:00Z"))
    assert (await record(lrs, M1))["status"] == "in_progress"
    await post(
        lrs,
        stmt("experienced", PAGE2, ts="2026-01-01T09:20:00Z"),
        stmt("passed", QUIZ, ts="2026-01-01T09:30:00Z", result={"score": {"scaled": 0.5}}),
    )
    below_mastery = await record(lrs, M1)
    assert below_mastery["status"] == "in_progress" and below_mastery["attempts"] == 1
    await post(
        lrs, stmt("passed", QUIZ, ts="2026-01-01T09:40:00Z", result={"score": {"scaled": 0.9}})
    )
    done = await record(lrs, M1)
    assert done["status"] == "completed"
    assert done["completed_at"] == "2026-01-01T09:40:00.000000Z"
    assert done["best_score"] == 0.9 and done["attempts"] == 2 and done["percent"] == 100


async def test_a_record_stores_its_items_and_facts_as_text_and_shows_them_whole(
    lrs: LRS,
) -> None:
    """A record's bulky fields are stored as one JSON text each (cheaper to read, compare and
    write than hundreds of small values); the API shows them as lists and objects."""
    await put_course(lrs)
    await post(lrs, stmt("experienced", PAGE1, ts="2026-01-01T09:10:00Z"))
    stored = await lrs.services.progress.records.find_one({"module": M1})
    assert isinstance(stored["items"], str) and isinstance(stored["facts"], str)
    shown = await record(lrs, M1)
    assert shown["items"] == json.loads(stored["items"])
    statuses = [item["status"] for item in shown["items"]]
    assert statuses == ["completed", "not_started", "not_started"]
    assert "facts" not in shown


async def test_get_progress_writes_each_item_list_out_as_stored(lrs: LRS) -> None:
    """GET /progress (and every event read from the store) writes a record's item list as the
    stored text, byte for byte, instead of parsing it and encoding it again (its cost grew with
    the items). Stored here with spaces no encoder of ours writes, so that only the text as
    stored can show them."""
    await put_course(lrs)
    await post(lrs, stmt("experienced", PAGE1, ts="2026-01-01T09:10:00Z"))
    stored = await lrs.services.progress.records.find_one({"module": M1})
    spaced = json.dumps(json.loads(stored["items"]), indent=1)
    await lrs.services.progress.records.update_one(
        {"_id": stored["_id"]}, {"$set": {"items": spaced}}
    )
    answer = await lrs.client.get("/progress", params={"module": M1})
    assert answer.status_code == 200
    assert spaced.encode() in answer.content
    assert answer.json()["records"][0]["items"] == json.loads(spaced)
    # So do SSE resumption and the store-polling live bus, which render what this reads.
    (changed,) = await lrs.services.progress.changed_since(lrs.store, 0, items_as_text=True)
    assert spaced.encode() in compact_json_bytes(public_record(changed))
    # Readers inside the LRS still get the list.
    (inside,) = await lrs.services.progress.find(lrs.store, module=M1)
    assert inside["items"] == json.loads(spaced)


async def test_a_record_written_before_packing_is_read_and_derived_on(lrs: LRS) -> None:
    """Records an earlier version wrote hold `items` and `facts` as lists and objects: they
    are shown as they are, and the next statement folds into their facts."""
    await put_course(lrs)
    await post(lrs, stmt("experienced", PAGE1, ts="2026-01-01T09:10:00Z"))
    stored = await lrs.services.progress.records.find_one({"module": M1})
    earlier = {"items": json.loads(stored["items"]), "facts": json.loads(stored["facts"])}
    await lrs.services.progress.records.update_one({"_id": stored["_id"]}, {"$set": earlier})
    shown = await record(lrs, M1)
    assert shown["items"] == earlier["items"] and shown["viewed"] == 1
    await post(lrs, stmt("experienced", PAGE2, ts="2026-01-01T09:20:00Z"))
    after = await record(lrs, M1)
    assert after["viewed"] == 2 and after["started_at"] == "2026-01-01T09:10:00.000000Z"
    assert [item["status"] for item in after["items"]][:2] == ["completed", "completed"]
    assert isinstance((await lrs.services.progress.records.find_one({"module": M1}))["items"], str)


async def test_voiding_a_pass_retracts_completion(lrs: LRS) -> None:
    """Design 5: voiding a statement retracts what it contributed."""
    await put_course(lrs)
    ids = await post(
        lrs,
        stmt("experienced", PAGE1),
        stmt("experienced", PAGE2),
        stmt("passed", QUIZ, result={"score": {"scaled": 1.0}}),
    )
    assert (await record(lrs, M1))["status"] == "completed"
    await post(
        lrs,
        {
            "actor": LEARNER,
            "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
            "object": {"objectType": "StatementRef", "id": ids[2]},
        },
    )
    assert (await record(lrs, M1))["status"] == "in_progress"


async def test_video_progress_extension_counts_as_viewed(lrs: LRS) -> None:
    """Profile video: a progress extension at or above the threshold means viewed."""
    await put_course(lrs)
    progress = "https://w3id.org/xapi/video/extensions/progress"
    await post(
        lrs,
        stmt(
            "https://w3id.org/xapi/video/verbs/played",
            VIDEO,
            result={"extensions": {progress: 0.5}},
        ),
    )
    assert (await record(lrs, M2))["status"] == "started"
    await post(
        lrs,
        stmt(
            "https://w3id.org/xapi/video/verbs/paused",
            VIDEO,
            result={"extensions": {progress: 0.97}},
        ),
    )
    assert (await record(lrs, M2))["status"] == "completed"


async def test_learner_course_rollup_and_summary(lrs: LRS) -> None:
    await put_course(lrs)
    await post(lrs, stmt("completed", VIDEO), stmt("experienced", PAGE1, actor=OTHER))
    learner = quote(json.dumps(LEARNER), safe="")
    response = await lrs.client.get(
        f"/progress/learners/{learner}/courses/{quote(COURSE, safe='')}"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["completed"] == 1 and body["total"] == 2 and body["percent"] == 50
    assert [m["status"] for m in body["modules"]] == ["not_started", "completed"]
    key = quote("mbox:mailto:ada@example.com", safe="")
    by_key = await lrs.client.get(f"/progress/learners/{key}/courses/{quote(COURSE, safe='')}")
    assert by_key.json()["modules"] == body["modules"]
    summary = await lrs.client.get(f"/progress/courses/{quote(COURSE, safe='')}/summary")
    modules = {m["module"]: m for m in summary.json()["modules"]}
    assert modules[M2]["counts"] == {
        "not_started": 1,
        "started": 0,
        "in_progress": 0,
        "completed": 1,
    }
    assert modules[M2]["completion_rate"] == 0.5
    assert modules[M1]["counts"]["in_progress"] == 1


async def test_waive_and_reset_are_recorded_as_statements(lrs: LRS) -> None:
    """Issue 4: waive/reset never write progress directly: they record statements with the
    caller as authority, and the derivation does the rest."""
    await put_course(lrs)
    await post(lrs, stmt("experienced", PAGE1))
    response = await lrs.client.post(
        "/progress/waive",
        json={"learner": LEARNER, "course": COURSE, "module": M1, "reason": "prior learning"},
    )
    assert response.status_code == 202, response.text
    await settle(lrs)
    assert (await record(lrs, M1))["status"] == "completed"
    waiver = await lrs.client.get(
        "/xapi/statements", params={"statementId": response.json()["statement"]}
    )
    assert waiver.json()["verb"]["id"] == "https://w3id.org/xapi/adl/verbs/waived"
    response = await lrs.client.post(
        "/progress/reset",
        json={"learner": "mbox:mailto:ada@example.com", "course": COURSE, "module": M1},
    )
    assert response.status_code == 202
    await settle(lrs)
    assert (await record(lrs, M1))["status"] == "not_started"
    await post(lrs, stmt("experienced", PAGE2, ts="2099-01-01T00:00:00Z"))
    after = await record(lrs, M1)
    assert after["status"] == "in_progress" and after["viewed_ids"] == [PAGE2]


async def test_progress_write_needs_scope(lrs: LRS) -> None:
    reader = await lrs.credential(["progress/read"])
    response = await lrs.client.post(
        "/progress/waive",
        json={"learner": LEARNER, "course": COURSE, "module": M1},
        headers={"Authorization": reader},
    )
    assert response.status_code == 403
    writer = await lrs.credential(["statements/write"])
    response = await lrs.client.get("/progress", headers={"Authorization": writer})
    assert response.status_code == 403


async def test_catalogue_change_rederives(lrs: LRS) -> None:
    """Design 5: a catalogue change (a new required item) re-derives the affected records."""
    await put_course(lrs)
    await post(lrs, stmt("completed", VIDEO))
    assert (await record(lrs, M2))["status"] == "completed"
    definition = course_definition()
    definition["modules"][1]["content"].append("http://example.com/content/video2")
    await put_course(lrs, definition)
    await settle(lrs)
    changed = await record(lrs, M2)
    assert changed["status"] == "in_progress" and changed["required"] == 2


async def test_discovery_from_statements(lrs: LRS) -> None:
    """Design 3.3: without a definition, the parent activity is the module; records are
    marked discovered."""
    module = "http://example.com/discovered/module"
    await post(lrs, stmt("completed", "http://example.com/discovered/a", parent=module))
    first = await record(lrs, module)
    assert first["discovered"] is True and first["status"] == "completed"
    await post(
        lrs, stmt("experienced", "http://example.com/discovered/b", actor=OTHER, parent=module)
    )
    regrown = await record(lrs, module)
    assert regrown["status"] == "in_progress" and regrown["required"] == 2


CMI5_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/cmi5"
CMI5_XML = b"""<?xml version="1.0" encoding="utf-8"?>
<courseStructure xmlns="https://w3id.org/xapi/profiles/cmi5/v1/CourseStructure.xsd">
  <course id="http://example.com/cmi5/course">
    <title><langstring lang="en-US">cmi5 course</langstring></title>
    <description><langstring lang="en-US">d</langstring></description>
  </course>
  <block id="http://example.com/cmi5/block1">
    <title><langstring lang="en-US">Block 1</langstring></title>
    <description><langstring lang="en-US">d</langstring></description>
    <au id="http://example.com/cmi5/au1" moveOn="Completed">
      <title><langstring lang="en-US">AU 1</langstring></title>
      <description><langstring lang="en-US">d</langstring></description>
      <url>au1/index.html</url>
    </au>
    <au id="http://example.com/cmi5/au2" moveOn="Passed" masteryScore="0.7">
      <title><langstring lang="en-US">AU 2</langstring></title>
      <description><langstring lang="en-US">d</langstring></description>
      <url>au2/index.html</url>
    </au>
  </block>
</courseStructure>
"""


async def test_cmi5_import_and_cmi5_rules(lrs: LRS) -> None:
    """Issue 4: blocks become modules; AUs items with moveOn and masteryScore; cmi5 profile:
    satisfied is not counted, completed views, passed judges."""
    response = await lrs.client.post(
        "/courses/import", content=CMI5_XML, headers={"Content-Type": "application/xml"}
    )
    assert response.status_code == 201, response.text
    module = response.json()["modules"][0]
    assert module["id"] == "http://example.com/cmi5/block1"
    assert [i["move_on"] for i in module["items"]] == ["Completed", "Passed"]
    block = "http://example.com/cmi5/block1"
    sat = "https://w3id.org/xapi/adl/verbs/satisfied"
    # Issue 11: only cmi5 defined statements (the cmi5 category, cmi5 9.6.2.1) give signals;
    # without it a statement is "cmi5 allowed" and counts as an access only (cmi5 7.1.3).
    defined = {"contextActivities": {"category": [{"id": CMI5_CATEGORY}]}}
    await post(lrs, stmt("completed", "http://example.com/cmi5/au1"))
    assert (await record(lrs, block))["status"] == "started"
    await post(
        lrs,
        stmt(sat, block),
        {**stmt("completed", "http://example.com/cmi5/au1"), "context": defined},
    )
    assert (await record(lrs, block))["status"] == "in_progress"
    await post(
        lrs,
        {
            **stmt(
                "passed",
                "http://example.com/cmi5/au2",
                result={"score": {"scaled": 0.75}, "success": True},
            ),
            "context": defined,
        },
    )
    assert (await record(lrs, block))["status"] == "completed"


async def test_invalid_cmi5_xml_names_the_line(lrs: LRS) -> None:
    response = await lrs.client.post(
        "/courses/import",
        content=b"<courseStructure>\n<course id='x'>\n</oops>",
        headers={"Content-Type": "application/xml"},
    )
    assert response.status_code == 400
    assert "line 3" in response.json()["error"]


async def test_group_actor_counts_for_no_member(lrs: LRS) -> None:
    """Design 2: an identified Group actor counts for none of its members' progress."""
    await put_course(lrs)
    group = {"objectType": "Group", "mbox": "mailto:team@example.com", "member": [LEARNER]}
    await post(lrs, stmt("completed", VIDEO, actor=group))
    assert (await record(lrs, M2))["status"] == "not_started"


# --- SSE resumption (Last-Event-ID) -------------------------------------------------------------


class _CatchUpOnlyBus(EventBus):
    """A bus whose streams end right after their catch-up, so that a stream request through the
    in-process transport returns (the live part is covered by tests/test_progress_faults.py)."""

    @contextlib.asynccontextmanager
    async def subscribe(self, store: str | None = None) -> AsyncIterator[asyncio.Queue]:
        async with super().subscribe(store) as queue:
            queue.put_nowait(None)
            yield queue


async def catch_up(lrs: LRS, last_event_id: str) -> list[tuple[str, dict]]:
    """The (id, record) events a stream resumed at `last_event_id` replays."""
    lrs.services.bus = _CatchUpOnlyBus()
    response = await lrs.client.get(
        "/progress/stream", params={"course": COURSE}, headers={"Last-Event-ID": last_event_id}
    )
    assert response.status_code == 200, response.text
    events = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("event") == "progress":
            events.append((fields["id"], json.loads(fields["data"])))
    return events


def _clock(offset_seconds: float):
    return lambda: time.time_ns() // 1000 + int(offset_seconds * 1e6)


async def test_sse_resume_does_not_depend_on_the_writers_clocks(lrs: LRS, monkeypatch) -> None:
    """Two writers whose clocks disagree (two worker hosts, clock skew): a client that saw the
    change of the writer whose clock runs ahead still gets, on resuming, the change written
    after it by the writer whose clock runs behind."""
    await put_course(lrs)
    monkeypatch.setattr("lrs.storage.progress.monotonic_now_micros", _clock(+60))
    await post(lrs, stmt("experienced", PAGE1))
    seen = (await record(lrs, M1))["event_id"]
    monkeypatch.setattr("lrs.storage.progress.monotonic_now_micros", _clock(-60))
    await post(lrs, stmt("completed", VIDEO, actor=OTHER))
    replayed = await catch_up(lrs, seen)
    assert [(r["learner"], r["module"]) for _, r in replayed] == [
        ("mbox:mailto:bob@example.com", M2)
    ]
    assert replayed[0][0] == (await record(lrs, M2, OTHER))["event_id"]


async def test_event_ids_are_a_sequence_in_write_order(lrs: LRS) -> None:
    """Every change of a record takes the next number of its store's sequence; resuming at a
    change replays exactly the records changed after it, each once, in their current state."""
    await put_course(lrs)
    await post(lrs, stmt("launched", M1))
    first = await record(lrs, M1)
    await post(lrs, stmt("experienced", PAGE1))
    second = await record(lrs, M1)
    await post(lrs, stmt("completed", VIDEO))
    third = await record(lrs, M2)
    ids = [int(r["event_id"]) for r in (first, second, third)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    replayed = await catch_up(lrs, first["event_id"])
    assert [(i, r["module"], r["status"]) for i, r in replayed] == [
        (second["event_id"], M1, "in_progress"),
        (third["event_id"], M2, "completed"),
    ]
    assert await catch_up(lrs, third["event_id"]) == []


async def test_sequence_numbers_are_unique_under_concurrent_writers(lrs: LRS) -> None:
    progress = lrs.services.progress
    numbers = await asyncio.gather(*(progress.next_seq("s") for _ in range(40)))
    assert sorted(numbers) == list(range(1, 41))
    assert await progress.next_seq("other store") == 1


async def test_resuming_with_a_clock_based_id_from_before_the_upgrade(lrs: LRS) -> None:
    """Ids sent before the sequence existed were the writer's clock in microseconds: such an
    id still resumes (changes after that moment), so open dashboards survive the upgrade."""
    await put_course(lrs)
    before = str(time.time_ns() // 1000 - 1_000_000)
    await post(lrs, stmt("experienced", PAGE1))
    replayed = await catch_up(lrs, before)
    assert [r["module"] for _, r in replayed] == [M1]
    assert await catch_up(lrs, str(time.time_ns() // 1000 + 1_000_000)) == []


async def test_listing_pages_read_in_slices_give_every_record_once(lrs: LRS, monkeypatch) -> None:
    """GET /progress reads a page a slice at a time (memory): whatever the slice, page and
    cursor, the pages list every record once, in order, and the last page says no more."""
    import lrs.api.progress as progress_api

    await put_course(lrs)
    learners = [{"objectType": "Agent", "mbox": f"mailto:l{n}@example.com"} for n in range(7)]
    await post(
        lrs,
        *[stmt("experienced", PAGE1, actor=a) for a in learners],
        *[stmt("experienced", VIDEO, actor=a) for a in learners[:4]],
    )
    whole = await lrs.client.get("/progress", params={"course": COURSE, "limit": "1000"})
    assert whole.status_code == 200 and whole.json()["more"] == ""
    expected = [(r["learner"], r["module"]) for r in whole.json()["records"]]
    assert len(expected) == 11 and expected == sorted(expected)
    for slice_size in (1, 2, 3, 200):
        monkeypatch.setattr(progress_api, "_PAGE_SLICE", slice_size)
        for limit in (1, 3, 4, 11, 12):
            seen: list[tuple[str, str]] = []
            url = f"/progress?course={quote(COURSE, safe='')}&limit={limit}"
            pages = 0
            while url:
                response = await lrs.client.get(url)
                assert response.status_code == 200, response.text
                body = response.json()
                assert len(body["records"]) <= limit
                seen += [(r["learner"], r["module"]) for r in body["records"]]
                url = body["more"]
                pages += 1
            assert seen == expected, (slice_size, limit)
            assert pages == max(1, -(-len(expected) // limit)), (slice_size, limit)
