"""Forwarding on the production path: the API enqueues Celery tasks on a real Redis, a real
Celery worker fans out and delivers to a peer LRS on a loopback port, and the sweep (here in
the API process, as `lrs beat` does too) brings back whatever a dead worker or a Redis that lost
its queue left behind. Uses the threads harness of tests/test_progress_e2e.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import federation_support as support
import pytest
import test_progress_e2e as e2e
from federation_support import Peer, eventually, make_statement
from test_progress_e2e import ThreadStack, api_client, drop_queue

peer = support.peer
live_redis = e2e.live_redis


@pytest.fixture
def stack(
    live_redis: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ThreadStack]:
    # Settings the harness does not pass reach both the API and the worker from the environment.
    for name, value in {
        "LRS_FEDERATION_INTERVAL": "0.2",
        "LRS_FORWARD_BACKOFF_BASE": "0.05",
        "LRS_FORWARD_BACKOFF_MAX": "0.2",
        "LRS_FEDERATION_TIMEOUT": "5",
    }.items():
        monkeypatch.setenv(name, value)
    running = ThreadStack(live_redis, tmp_path / "data", sweep_interval=0.3, outbox_grace=0.5)
    try:
        yield running
    finally:
        running.close()


async def test_celery_forwards_and_recovers_from_a_dead_worker_and_a_lost_queue(
    stack: ThreadStack, peer: Peer, live_redis: str
) -> None:
    async with api_client(stack.base_url, stack.auth) as client:
        response = await client.post(
            "/admin/destinations",
            json={"endpoint": peer.endpoint, "username": peer.key, "password": peer.secret},
        )
        assert response.status_code == 201, response.text
        destination_id = response.json()["id"]

        async def post(count: int, offset: int) -> set[str]:
            batch = [make_statement(offset + n) for n in range(count)]
            answer = await client.post("/xapi/statements", json=batch)
            assert answer.status_code == 200, answer.text
            return set(answer.json())

        def on_peer(ids: set[str]) -> bool:
            return peer.ids() >= ids

        # 1. The normal path: fan-out task, delivery task.
        first = await post(40, 0)
        await eventually(lambda: on_peer(first), message="delivery through the worker")
        await eventually(
            lambda: any(name == "lrs.federation.deliver" for name, _, _ in stack.tasks.runs),
            message="the worker's delivery task to finish",
        )

        # 2. The peer is down: the worker's attempt fails, and the sweep brings the retry.
        peer.lrs.stop()
        second = await post(10, 100)

        async def failing() -> bool:
            lag = (await client.get(f"/admin/destinations/{destination_id}")).json()["lag"]
            return lag["retries"] > 0

        await eventually(failing, message="a failed attempt against the stopped peer")
        peer.lrs.start()
        await eventually(lambda: on_peer(second), message="the retry after the peer returned")

        # 3. No worker, and Redis loses the queued tasks: the statements still carry their
        # outbox marker, so the sweep fans them out again once a worker is back.
        stack.stop_worker()
        third = await post(10, 200)
        drop_queue(live_redis, stack.queue)
        stack.start_worker()
        await eventually(lambda: on_peer(third), message="the sweep to forward them", timeout=30)

        lag = (await client.get(f"/admin/destinations/{destination_id}")).json()["lag"]
        assert lag["dead"] == 0
        assert peer.ids() == first | second | third
