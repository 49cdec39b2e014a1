"""Faults on the real path (API + Celery worker + Redis; harness in tests/test_progress_e2e.py):
the outbox keeps every statement through a broker outage, and SSE resumption with
Last-Event-ID returns what a disconnected client missed (design notes 1 and 6)."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import test_progress_e2e as e2e
from test_progress_e2e import (
    MONGODB_URL,
    Course,
    EventStream,
    Stack,
    ThreadStack,
    api_client,
    basic,
    child_env,
    events_flow,
    eventually,
    free_port,
    post,
    progress,
    start_api_process,
    stmt,
    wait_until,
)

# The harness's fixtures: pytest finds fixtures by name in the test module's namespace.
live_redis = e2e.live_redis
make_stack = e2e.make_stack
mode = e2e.mode

GRACE = 0.5  # LRS_OUTBOX_GRACE for the sweeping API
SWEEP = 0.3  # LRS_SWEEP_INTERVAL


def _identity(mode: str) -> dict[str, str]:
    """Store, credential and database shared by the outage phase and the recovery phase."""
    return {
        "store": f"e2e-{uuid.uuid4().hex[:10]}",
        "key": "e2e-" + secrets.token_hex(4),
        "secret": secrets.token_urlsafe(18),
        "database": "lrs" if mode == "threads" else f"lrs_e2e_{uuid.uuid4().hex[:10]}",
    }


def _outage_workload(course: Course) -> list[list[dict[str, Any]]]:
    """Requests (lists of statements) for three learners; expected results in `_expected`."""
    a, b, c = course.learner("a"), course.learner("b"), course.learner("c")
    return [
        [stmt(a, "experienced", course.page1, "2026-04-01T09:00:00Z")],
        [
            stmt(a, "experienced", course.page2, "2026-04-01T09:05:00Z"),
            stmt(b, "experienced", course.page1, "2026-04-01T09:06:00Z"),
        ],
        [stmt(a, "passed", course.quiz, "2026-04-01T09:10:00Z", {"score": {"scaled": 0.9}})],
        [stmt(b, "passed", course.quiz, "2026-04-01T09:12:00Z", {"score": {"scaled": 0.5}})],
        [
            stmt(c, "launched", course.m1, "2026-04-01T09:20:00Z"),
            stmt(c, "completed", course.video, "2026-04-01T09:21:00Z"),
        ],
    ]


async def _check_expected(client: Any, course: Course) -> None:
    a, b, c = course.learner("a"), course.learner("b"), course.learner("c")
    ra = await progress(client, a, course.m1)
    assert ra["status"] == "completed", ra
    assert ra["completed_at"] == "2026-04-01T09:10:00.000000Z"
    assert ra["started_at"] == "2026-04-01T09:00:00.000000Z"
    assert ra["percent"] == 100 and ra["best_score"] == 0.9
    rb = await progress(client, b, course.m1)
    assert rb["status"] == "in_progress" and rb["attempts"] == 1 and rb["best_score"] == 0.5, rb
    assert rb["passed"] is False and rb["viewed"] == 1
    assert (await progress(client, c, course.m1))["status"] == "started"
    assert (await progress(client, c, course.m2))["status"] == "completed"
    assert (await progress(client, a, course.m2))["status"] == "not_started"


async def _store_while_broker_down(
    mode: str, redis_dead: str, workdir: Path, identity: dict[str, str], course: Course
) -> list[str]:
    """Phase 1: `lrs serve` (a real subprocess, alone on its store) whose Redis is a loopback
    port nobody listens on. Every request must succeed; nothing may be derived."""
    storage = (
        {"LRS_STORAGE": "embedded", "LRS_DATA_DIR": str(workdir / "data")}
        if mode == "threads" or not MONGODB_URL
        else {"LRS_STORAGE": "mongodb", "LRS_MONGODB_URL": MONGODB_URL}
    )
    env = child_env(
        **storage,
        LRS_DATABASE=identity["database"],
        LRS_REDIS_URL=redis_dead,
        LRS_DERIVATION="celery",
        LRS_SWEEP_INTERVAL=str(SWEEP),  # the sweep keeps trying, and failing, meanwhile
        LRS_OUTBOX_GRACE=str(GRACE),
        LRS_ADMIN_KEY=identity["key"],
        LRS_ADMIN_SECRET=identity["secret"],
        LRS_ADMIN_STORE=identity["store"],
    )
    api = start_api_process(env, workdir, name="api-broker-down")
    try:
        auth = basic(identity["key"], identity["secret"])
        async with api_client(api.base_url, auth) as client:
            started = time.monotonic()
            await course.put(client)
            # Concurrent clients, as during a real outage. No request waits for the broker
            # (lrs.broker publishes from a background thread), so none is slow, none hangs.
            answers = await asyncio.gather(
                *(post(client, *request) for request in _outage_workload(course))
            )  # `post` asserts 200
            ids = [statement_id for answer in answers for statement_id in answer]
            assert time.monotonic() - started < 12
            response = await client.get("/progress", params={"course": course.id})
            assert response.status_code == 200 and response.json()["records"] == []
        await asyncio.sleep(SWEEP * 2)  # let the failing sweep run at least once more
    finally:
        api.stop()
    log = api.text()
    assert "could not send" in log and "the outbox sweep will send the work again" in log, log
    # A clean shutdown despite the dead broker (uvicorn re-raises the SIGTERM it handled).
    assert api.process.returncode in (0, -signal.SIGTERM), log
    assert "Traceback" not in log, log
    return ids


async def test_statements_stored_while_the_broker_is_down_are_derived_by_the_sweep(
    mode: str, make_stack: Callable[..., Stack], live_redis: str, tmp_path: Path
) -> None:
    """Outbox (design 1.3): with Redis unreachable every POST still answers 200 and the
    statements are stored with their outbox entries; once Redis and a worker are back, only the
    sweep (the original enqueues failed) gets every statement derived, and SSE clients see it."""
    identity = _identity(mode)
    course = Course()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ids = await _store_while_broker_down(mode, dead, tmp_path, identity, course)
    assert len(ids) == 7

    # Phase 2: Redis is reachable, a sweeping API is up, but no worker runs yet.
    stack = make_stack(worker=False, sweep_interval=SWEEP, outbox_grace=GRACE, **identity)
    await events_flow(stack, live_redis)
    async with stack.client() as client, EventStream(client, {"course": course.id}) as stream:
        await asyncio.sleep(SWEEP * 3)  # sweeps enqueue; nobody consumes
        assert set((await stack.derived_flags(ids)).values()) == {False}
        assert stream.events == []

        stack.start_worker()

        async def all_derived() -> bool:
            return set((await stack.derived_flags(ids)).values()) == {True}

        await wait_until(all_derived, "every statement derived after the outage")
        await _check_expected(client, course)
        # The swept derivations were pushed live as well: A completed, C's video completed.
        await stream.wait_for(lambda r: r["module"] == course.m1 and r["status"] == "completed")
        await stream.wait_for(lambda r: r["module"] == course.m2 and r["status"] == "completed")
    flags = await stack.derived_flags(ids)
    assert flags == {i: True for i in ids}
    if isinstance(stack, ThreadStack):
        # Celery logs a task once it returned, after it marked its statements derived.
        await eventually(
            lambda: stack.tasks.statements_derived(stack.store) == set(ids),
            "the worker's derivation tasks to be logged",
        )


async def test_the_beat_sweep_task_derives_what_the_outage_left(
    mode: str, make_stack: Callable[..., Stack], live_redis: str, tmp_path: Path
) -> None:
    """The same outage, recovered by the `lrs.sweep_underived` task that `lrs beat` schedules
    (and each worker sends on start), with the API's own sweep out of the picture."""
    identity = _identity(mode)
    course = Course()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ids = await _store_while_broker_down(mode, dead, tmp_path, identity, course)
    # API sweep: grace of an hour, so it hands nothing over. The worker's sweep: no grace.
    stack = make_stack(
        sweep_interval=3600, outbox_grace=3600, worker_settings={"outbox_grace": 0}, **identity
    )

    async def derived() -> bool:
        return set((await stack.derived_flags(ids)).values()) == {True}

    await asyncio.to_thread(stack.send_task, "lrs.sweep_underived")
    if isinstance(stack, ThreadStack):
        # Fail fast on the task's outcome instead of waiting out the timeout.
        def swept() -> list[str]:
            return [s for n, _, s in stack.tasks.runs if n == "lrs.sweep_underived"]

        async def sweep_ran() -> bool:
            return bool(swept())

        await wait_until(sweep_ran, "the sweep task to run")
        assert swept() == ["SUCCESS"]
    await wait_until(derived, "every statement derived by the sweep task")
    async with stack.client() as client:
        await _check_expected(client, course)


async def test_sse_resumes_with_last_event_id(
    make_stack: Callable[..., Stack], live_redis: str
) -> None:
    """Design 1.5: a client that reconnects with Last-Event-ID first gets every record changed
    while it was away (current state, once each), then live changes with no gap."""
    stack = make_stack()
    await events_flow(stack, live_redis)
    course = Course()
    a, b, c = course.learner("a"), course.learner("b"), course.learner("c")
    async with stack.client() as client:
        await course.put(client)
        async with EventStream(client, {"course": course.id}) as stream:
            await post(client, stmt(a, "experienced", course.page1, "2026-05-01T08:00:00Z"))
            seen = await stream.wait_for(lambda r: r["learner"] == course.key("a"))
        # Disconnected: two records change.
        await post(
            client,
            stmt(a, "experienced", course.page2, "2026-05-01T08:01:00Z"),
            stmt(a, "passed", course.quiz, "2026-05-01T08:02:00Z", {"score": {"scaled": 1.0}}),
            stmt(b, "completed", course.video, "2026-05-01T08:03:00Z"),
        )

        async def missed_changes_derived() -> bool:
            return (await progress(client, a, course.m1))["status"] == "completed" and (
                await progress(client, b, course.m2)
            )["status"] == "completed"

        await wait_until(missed_changes_derived, "the changes made while disconnected")

        headers = {"Last-Event-ID": seen["id"]}
        async with EventStream(client, {"course": course.id}, headers) as resumed:
            await resumed.wait_for(lambda r: r["learner"] == course.key("b"))
            catch_up = list(resumed.events)
            keys = sorted((e["record"]["learner"], e["record"]["module"]) for e in catch_up)
            assert keys == [(course.key("a"), course.m1), (course.key("b"), course.m2)]
            assert all(int(e["id"]) > int(seen["id"]) for e in catch_up)
            assert {e["record"]["status"] for e in catch_up} == {"completed"}
            # Then live: a change made now arrives on the same stream, once.
            await post(client, stmt(c, "experienced", course.page1, "2026-05-01T08:04:00Z"))
            live = await resumed.wait_for(lambda r: r["learner"] == course.key("c"))
            assert int(live["id"]) > max(int(e["id"]) for e in catch_up)
            await asyncio.sleep(0.3)
            assert len(resumed.events) == 3

        # Resuming from the newest id (as the lastEventId parameter, for EventSource
        # polyfills): nothing was missed, nothing is replayed.
        params = {"course": course.id, "lastEventId": live["id"]}
        async with EventStream(client, params) as caught_up:
            await asyncio.sleep(0.5)
            assert caught_up.events == []
        bad = await client.get("/progress/stream", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400
