"""The outbox sweep with a broker but no worker consuming (design notes 1.3): statements still
underived after the grace period are enqueued again, but not at every sweep round, so the
broker's queue does not grow without bound while the workers are away. A real Redis broker, a
private queue, no worker."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import test_progress_e2e as e2e
from test_progress_e2e import celery_app_on, celery_broker, drop_queue

from lrs import broker
from lrs.progress import dispatch
from lrs.progress.dispatch import CeleryDispatcher, marker
from lrs.services import Services, build_services
from lrs.storage.outbox import Owed
from lrs.xapi.comparison import statements_equivalent
from tests.conftest import make_settings, statement
from tests.redis_hygiene import forget_and_check

live_redis = e2e.live_redis


@pytest.fixture
def queue(live_redis: str) -> Iterator[str]:
    """A private Celery queue on the real broker, which no worker consumes."""
    name = f"lrs-test-sweep-{uuid.uuid4().hex[:10]}"
    with celery_app_on(celery_broker(live_redis), name):
        yield name
    drop_queue(live_redis, name)


@pytest.fixture
def store(live_redis: str) -> Iterator[str]:
    """The test's store; the sweep's markers of it are removed from the shared Redis after."""
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    yield name
    forget_and_check(live_redis, stores=[name])


@pytest.fixture
async def services(live_redis: str, tmp_path: Path, queue: str) -> AsyncIterator[Services]:
    settings = make_settings("memory", tmp_path, redis_url=live_redis, derivation="celery")
    built = build_services(settings)
    await built.start(background=False)  # no sweeper task: the test runs the sweeps
    yield built
    await built.close()
    await built.bus.close()


def queued(redis_url: str, queue: str) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message waiting in the queue."""
    client = redis.Redis.from_url(redis_url)
    try:
        messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()
    return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in messages]


def queued_statements(redis_url: str, queue: str) -> list[str]:
    return sorted(
        statement_id
        for task, args in queued(redis_url, queue)
        if task == "lrs.derive_statements"
        for statement_id in args[1]
    )


async def stored_while_the_broker_was_down(services: Services, store: str, n: int) -> list[str]:
    """Statements stored (one batch, so one outbox entry, each) but never sent to the broker
    (what the sweep is for)."""
    ids = []
    for _ in range(n):
        batch = [{**statement(), "id": str(uuid.uuid4())}]
        await services.statements.insert_batch(store, batch, statements_equivalent)
        ids.append(batch[0]["id"])
    return sorted(ids)


async def sweep(dispatcher: CeleryDispatcher) -> int:
    """One sweep round, once its messages are in the broker."""
    handed_over = await dispatcher.sweep(grace=0)
    assert isinstance(dispatcher.publisher, broker.TaskPublisher)
    await asyncio.to_thread(dispatcher.publisher.flush)
    return handed_over


async def entry_of(services: Services, store: str, statement_id: str) -> str:
    entries = await services.statements.outbox.pending("derive", limit=10_000)
    return next(e["_id"] for e in entries if e["store"] == store and statement_id in e["ids"])


async def test_a_sweep_round_does_not_enqueue_again_what_it_just_enqueued(
    services: Services, live_redis: str, queue: str, store: str
) -> None:
    ids = await stored_while_the_broker_was_down(services, store, 3)
    dispatcher = services.dispatcher
    assert isinstance(dispatcher, CeleryDispatcher)
    assert await sweep(dispatcher) == 3
    assert queued_statements(live_redis, queue) == ids
    # No worker took them: the next rounds find them still owed, and leave them queued.
    assert await sweep(dispatcher) == 0
    assert await sweep(dispatcher) == 0
    assert queued_statements(live_redis, queue) == ids
    # Once the re-enqueue period has passed (the marker expired), a statement goes out again.
    client = redis.Redis.from_url(live_redis)
    try:
        key = marker("entry", store, await entry_of(services, store, ids[0]))
        ttl = client.pttl(key)
        assert 0 < ttl <= services.settings.outbox_requeue_after * 1000
        client.delete(key)
    finally:
        client.close()
    assert await sweep(dispatcher) == 1
    assert queued_statements(live_redis, queue) == sorted([*ids, ids[0]])


async def test_a_sweep_round_adds_nothing_while_the_queue_is_backed_up(
    services: Services, live_redis: str, queue: str, store: str
) -> None:
    """Messages waiting that no worker takes: more of them would only wait behind."""
    dispatcher = services.dispatcher
    assert isinstance(dispatcher, CeleryDispatcher)
    dispatcher.queue_cap = 2
    dispatcher.submit(Owed(store, ["already-queued-1"]))
    await asyncio.to_thread(dispatcher.publisher.flush)
    dispatcher.submit(Owed("another-store", ["already-queued-2"]))
    ids = await stored_while_the_broker_was_down(services, store, 2)
    assert await sweep(dispatcher) == 0
    assert queued_statements(live_redis, queue) == ["already-queued-1", "already-queued-2"]
    # A worker drains the queue: the next round hands the statements over.
    drop_queue(live_redis, queue)
    assert await sweep(dispatcher) == 2
    assert queued_statements(live_redis, queue) == ids


async def test_a_sweep_pages_past_statements_it_enqueued_recently(
    services: Services,
    live_redis: str,
    queue: str,
    store: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The oldest underived statements are already waiting in the broker: the round must reach
    the newer ones behind them, which nobody has enqueued yet."""
    monkeypatch.setattr(dispatch, "_SWEEP_PAGE", 2)
    dispatcher = services.dispatcher
    assert isinstance(dispatcher, CeleryDispatcher)
    older = await stored_while_the_broker_was_down(services, store, 4)
    assert await sweep(dispatcher) == 2  # a page's worth per round
    assert await sweep(dispatcher) == 2  # past the two enqueued: the other two
    newer = await stored_while_the_broker_was_down(services, store, 1)
    assert await sweep(dispatcher) == 1
    assert queued_statements(live_redis, queue) == sorted(older + newer)
