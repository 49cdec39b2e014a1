"""Operations (issue 6): health, readiness, metrics, request ids, structured logs, erasure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator

import pytest

from lrs.api import operations
from lrs.derivation_process import HEARTBEAT_PREFIX
from lrs.observability import JsonFormatter, Occasional, request_id
from tests.conftest import LRS, statement

LEARNER = {"objectType": "Agent", "mbox": "mailto:erase-me@example.com"}


async def test_health_needs_nothing(lrs: LRS) -> None:
    response = await lrs.client.get("/health", headers={"Authorization": ""})
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_ready_reports_checks_and_backlog(lrs: LRS) -> None:
    response = await lrs.client.get("/ready")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["database"]["ok"] and checks["workers"]["mode"] == "inprocess"
    assert checks["backlog"]["underived"] == 0
    assert checks["backlog"]["resummaries_owed"] == 0


async def test_ready_reports_a_grown_module_owed_its_resummary(lrs: LRS) -> None:
    """A statement that discovers an item grows its module; the learners' records show the new
    item count only once the module is summarized again. Until then /ready says so, so that
    "nothing owed" means every record is final (the bench's drain waits for it)."""
    lrs.services.deriver.on_grown = None  # no timer: the re-summary runs when the test says
    module = "http://example.com/discovered/m"
    response = await lrs.client.post(
        "/xapi/statements",
        json=statement(
            object={"objectType": "Activity", "id": f"{module}/page1"},
            context={"contextActivities": {"parent": [{"id": module}]}},
        ),
    )
    assert response.status_code == 200, response.text
    await lrs.services.dispatcher.idle()
    backlog = (await lrs.client.get("/ready")).json()["checks"]["backlog"]
    assert backlog["underived"] == 0 and backlog["resummaries_owed"] == 1
    [owed] = await lrs.services.statements.outbox.pending("resummarize")
    await lrs.services.deriver.resummarize(owed["store"], owed["course"], owed["module"])
    backlog = (await lrs.client.get("/ready")).json()["checks"]["backlog"]
    assert backlog == {**backlog, "underived": 0, "resummaries_owed": 0}


@contextlib.asynccontextmanager
async def store_thread_busy(lrs: LRS) -> AsyncIterator[None]:
    """Occupy the embedded store's one thread (as a long query or a burst of writes would)."""
    release = threading.Event()
    thread = lrs.services.credentials.collection._thread
    busy = asyncio.ensure_future(thread.run(False, release.wait))
    try:
        yield
    finally:
        release.set()
        await busy


async def test_ready_while_the_embedded_store_is_busy(lrs: LRS, backend: str) -> None:
    """A store that is busy for longer than the probe waits is still reachable: readiness must
    not flap to 503 (a load balancer would take a working instance out under load)."""
    if backend != "embedded":
        pytest.skip("only the embedded store serves every query on one thread")
    async with store_thread_busy(lrs):
        response = await lrs.client.get("/ready")
        again = await lrs.client.get("/ready")
    assert response.status_code == 200, response.text
    assert again.status_code == 200, again.text
    database = response.json()["checks"]["database"]
    assert database["ok"] and database["busy"] and database["kind"] == "embedded"
    after = await lrs.client.get("/ready")
    assert after.status_code == 200 and not after.json()["checks"]["database"].get("busy")


async def test_ready_fails_when_the_embedded_store_stops_answering(
    lrs: LRS, backend: str, monkeypatch
) -> None:
    """Busy is not stuck: a probe left unanswered past the stall limit makes the store not
    ready."""
    if backend != "embedded":
        pytest.skip("only the embedded store serves every query on one thread")
    monkeypatch.setattr(operations, "EMBEDDED_STALL_SECONDS", 0.0)
    async with store_thread_busy(lrs):
        response = await lrs.client.get("/ready")
    assert response.status_code == 503, response.text
    database = response.json()["checks"]["database"]
    assert not database["ok"] and "not answered" in database["error"]


async def test_ready_needs_the_derivation_process_heartbeat(lrs: LRS) -> None:
    """With LRS_DERIVATION=process the API derives nothing: it is ready only while a derivation
    process beats (a Celery worker's heartbeat does not stand in for it)."""
    heartbeats = lrs.services.database["heartbeats"]
    lrs.services.settings.derivation = "process"
    try:
        await heartbeats.update_one(
            {"_id": "celery@host"},
            {"$set": {"name": "celery@host", "at": time.time()}},
            upsert=True,
        )
        missing = await lrs.client.get("/ready")
        name = f"{HEARTBEAT_PREFIX}host:42"
        await heartbeats.update_one(
            {"_id": name}, {"$set": {"name": name, "at": time.time()}}, upsert=True
        )
        beating = await lrs.client.get("/ready")
    finally:
        lrs.services.settings.derivation = "auto"
    assert missing.status_code == 503, missing.text
    assert "no derivation process heartbeat" in missing.json()["checks"]["workers"]["error"]
    assert beating.status_code == 200, beating.text
    assert beating.json()["checks"]["workers"] == {
        "ok": True,
        "mode": "process",
        "workers": [name],
        "ms": beating.json()["checks"]["workers"]["ms"],
    }


async def test_ready_fails_when_redis_is_unreachable(lrs: LRS) -> None:
    lrs.services.settings.redis_url = "redis://127.0.0.1:1/0"
    try:
        response = await lrs.client.get("/ready")
    finally:
        lrs.services.settings.redis_url = None
    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["ok"] is False


async def test_metrics_count_requests_and_statements(lrs: LRS) -> None:
    await lrs.client.post("/xapi/statements", json=[statement(), statement()])
    await lrs.client.get("/xapi/statements")
    text = (await lrs.client.get("/metrics")).text
    assert "lrs_statements_stored_total 2.0" in text
    assert (
        'lrs_http_requests_total{method="POST",route="/xapi/statements",status="200"} 1.0' in text
    )
    assert "lrs_derivation_backlog" in text and "lrs_sse_clients 0.0" in text
    assert "lrs_resummaries_owed 0.0" in text


async def test_request_id_is_echoed_or_made(lrs: LRS) -> None:
    response = await lrs.client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = (await lrs.client.get("/health")).headers["x-request-id"]
    assert len(generated) == 32


def test_json_log_lines_carry_request_id_and_no_secrets() -> None:
    token = request_id.set("rid-1")
    try:
        record = logging.LogRecord("lrs.access", logging.INFO, __file__, 1, "GET %s", ("/x",), None)
        record.fields = {"status": 200}
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert line["request_id"] == "rid-1" and line["message"] == "GET /x" and line["status"] == 200


async def test_access_log_omits_credentials(lrs: LRS, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="lrs.access"):
        await lrs.client.get("/xapi/statements")
    assert caplog.records
    rendered = " ".join(JsonFormatter().format(r) for r in caplog.records)
    assert lrs.auth.split()[1] not in rendered and "Basic" not in rendered


async def test_erasure_dry_run_then_erase(lrs: LRS) -> None:
    """Issue 6: erase a learner's statements, documents and progress, with a dry run first."""
    await lrs.client.post("/xapi/statements", json=[statement(actor=LEARNER), statement()])
    await lrs.client.put(
        "/xapi/activities/state",
        params={
            "activityId": "http://example.com/a",
            "agent": json.dumps(LEARNER),
            "stateId": "s1",
        },
        content=b"data",
        headers={"Content-Type": "text/plain"},
    )
    dry = await lrs.client.post("/admin/erasure", json={"learner": LEARNER})
    assert dry.status_code == 200, dry.text
    assert dry.json()["counts"]["statements"] == 1 and dry.json()["counts"]["documents"] == 1
    assert len((await lrs.client.get("/xapi/statements")).json()["statements"]) == 2
    done = await lrs.client.post("/admin/erasure", json={"learner": LEARNER, "dry_run": False})
    assert done.json()["counts"]["statements"] == 1
    remaining = (await lrs.client.get("/xapi/statements")).json()["statements"]
    assert [s["actor"] for s in remaining] == [statement()["actor"]]
    again = await lrs.client.post("/admin/erasure", json={"learner": LEARNER})
    assert set(again.json()["counts"].values()) == {0}


async def test_erasure_needs_admin_scope(lrs: LRS) -> None:
    writer = await lrs.credential(["all"])
    response = await lrs.client.post(
        "/admin/erasure", json={"learner": LEARNER}, headers={"Authorization": writer}
    )
    assert response.status_code == 403


def test_an_occasional_warning_goes_through_at_once_then_once_per_interval() -> None:
    now = [100.0]
    warning = Occasional(60.0, clock=lambda: now[0])
    assert warning.due()  # the first one at once
    now[0] += 59.9
    assert not warning.due()
    now[0] += 0.1
    assert warning.due()  # 60 s after the last one said
    now[0] += 1
    assert not warning.due()
    warning.reset()  # the trouble ended: the next one is news
    assert warning.due()
