"""Scale-out (issue 13): two `lrs serve` API processes and two `lrs worker` processes on one
store and one Redis, as `docker compose up --scale api=N --scale worker=M` runs them behind the
proxy, seen through HTTP only.

- Statements POSTed alternately to both APIs are derived exactly once in effect: the final
  progress is what the statements say, on either API.
- An SSE client on each API receives every change, whichever worker derived it and whichever
  API the statement came through (Redis pub/sub fans each change out to every API process).
- `X-Experience-API-Consistent-Through` is truthful across processes: every statement stored at
  or before the value API A gives is in that answer of API A, statements POSTed through API B
  meanwhile included; and every statement stored at or before the value of a POST's answer
  from API B is in any answer of API A that starts after it.

The store is the embedded one in a temporary directory (SQLite locking makes it shareable), or
the MongoDB of LRS_TEST_MONGODB_URL when set; Redis is the test Redis, with a Celery queue and
a store private to this run, so another run on the same Redis cannot take or see our work.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.redis_hygiene import forget_and_check
from tests.test_progress_e2e import (
    MONGODB_URL,
    VERBS,
    ChildProcess,
    EventStream,
    basic,
    child_env,
    drop_queue,
    start_api_process,
    wait_until,
)

WORKERS = 2
LEARNERS = 6
ITEMS = 3


@dataclass
class ScaleOut:
    apis: list[ChildProcess]
    workers: list[ChildProcess]
    auth: str
    store: str
    queue: str
    redis_url: str

    def client(self, index: int, timeout: float = 15.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.apis[index].base_url,
            headers={"Authorization": self.auth, "X-Experience-API-Version": "1.0.3"},
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def scale_out(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleOut]:
    workdir: Path = tmp_path_factory.mktemp("scale-out")
    tag = uuid.uuid4().hex[:10]
    queue = f"lrs-scale-{tag}"
    store = f"scale-{tag}"
    key, secret = f"scale-{tag}", secrets.token_urlsafe(18)
    database = f"lrs_scale_{tag}"
    storage = (
        {"LRS_STORAGE": "mongodb", "LRS_MONGODB_URL": MONGODB_URL}
        if MONGODB_URL
        else {"LRS_STORAGE": "embedded", "LRS_DATA_DIR": str(workdir / "data")}
    )
    env = child_env(
        **storage,
        LRS_DATABASE=database,
        LRS_REDIS_URL=redis_url,
        LRS_DERIVATION="celery",
        LRS_FEDERATION="celery",
        LRS_CELERY_QUEUE=queue,
        LRS_ADMIN_KEY=key,
        LRS_ADMIN_SECRET=secret,
        LRS_ADMIN_STORE=store,
        LRS_SECRET_KEY="scale-out-test",
    )
    apis: list[ChildProcess] = []
    workers: list[ChildProcess] = []
    try:
        # The workers start meanwhile (they need no API).
        for index in range(WORKERS):
            command = [
                *_lrs("worker", "--pool", "solo", "--without-mingle", "--without-gossip"),
                *("--without-heartbeat", "-n", f"{queue}-{index}@%h"),
            ]
            workers.append(ChildProcess(command, env, workdir / f"worker{index}.log"))
        for index in range(2):
            apis.append(start_api_process(env, workdir, name=f"api{index}"))
        for worker in workers:
            worker.wait_for(lambda w=worker: " ready." in w.text(), "lrs worker")
        yield ScaleOut(apis, workers, basic(key, secret), store, queue, redis_url)
    finally:
        for process in [*workers, *apis]:
            process.stop()
        drop_queue(redis_url, queue)
        nodes = [f"{queue}-{index}@" for index in range(WORKERS)]
        forget_and_check(redis_url, queues=[queue], stores=[store], nodes=nodes)
        if MONGODB_URL:
            from pymongo import MongoClient

            client: Any = MongoClient(MONGODB_URL, serverSelectionTimeoutMS=5000)
            client.drop_database(database)
            client.close()


def _lrs(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "lrs.cli", *args]


def _statement(
    learner: str, verb: str, activity: str, course: str, module: str, **extra: Any
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "actor": {"objectType": "Agent", "mbox": f"mailto:{learner}@example.com"},
        "verb": {"id": VERBS + verb, "display": {"en-US": verb}},
        "object": {"objectType": "Activity", "id": activity},
        "context": {
            "contextActivities": {"parent": [{"id": module}], "grouping": [{"id": course}]}
        },
        **extra,
    }


async def _streams_relay(stack: ScaleOut, streams: list[EventStream]) -> None:
    """Wait until each API's Redis listener relays to its SSE clients (it subscribes
    asynchronously at start-up): publish probes on the store's channel until each stream got
    one."""
    import json

    import redis.asyncio as redis_async

    from lrs.events import channel

    probe = json.dumps({"id": "0", "record": {"probe": True}})
    publisher = redis_async.Redis.from_url(stack.redis_url)
    try:
        for stream in streams:
            await wait_until(
                lambda s=stream: _published_and_seen(publisher, channel(stack.store), probe, s),
                "an API relaying Redis events to its SSE clients",
            )
    finally:
        await publisher.aclose()


async def _published_and_seen(publisher: Any, name: str, probe: str, stream: EventStream) -> bool:
    if any(event["record"].get("probe") for event in stream.events):
        return True
    await publisher.publish(name, probe)
    return False


async def test_every_change_reaches_every_api_and_is_derived_once(scale_out: ScaleOut) -> None:
    stack = scale_out
    tag = uuid.uuid4().hex[:8]
    course = f"http://example.com/scale/{tag}"
    module = f"{course}/module"
    items = [f"{module}/page-{n}" for n in range(ITEMS)]
    quiz = f"{module}/quiz"
    async with stack.client(0) as api_a, stack.client(1) as api_b:
        apis = [api_a, api_b]
        definition = {
            "title": "Scale-out",
            "modules": [{"id": module, "title": "M", "content": items, "assessment": quiz}],
        }
        defined = await api_a.put(f"/courses/{quote(course, safe='')}", json=definition)
        assert defined.status_code == 201, defined.text
        async with EventStream(api_a) as stream_a, EventStream(api_b) as stream_b:
            streams = [stream_a, stream_b]
            await _streams_relay(stack, streams)
            learners = [f"learner-{tag}-{n}" for n in range(LEARNERS)]
            # Each learner views every page and passes the quiz, one POST per statement,
            # alternately through A and B, learners interleaved: both workers take part.
            plan = [
                _statement(learner, "experienced", item, course, module)
                for item in items
                for learner in learners
            ]
            plan += [
                _statement(learner, "passed", quiz, course, module, result={"success": True})
                for learner in learners
            ]
            posted = await asyncio.gather(
                *(apis[n % 2].post("/xapi/statements", json=s) for n, s in enumerate(plan))
            )
            assert all(p.status_code == 200 for p in posted), [p.text for p in posted][:3]

            def completed(record: dict[str, Any]) -> bool:
                return record.get("module") == module and record.get("status") == "completed"

            keys = {f"mbox:mailto:{learner}@example.com" for learner in learners}
            for stream in streams:
                await wait_until(
                    _async(
                        lambda s=stream: (
                            {e["record"]["learner"] for e in s.events if completed(e["record"])}
                            == keys
                        )
                    ),
                    "every learner's completion on both streams",
                )
            # Every change published reached both APIs' clients: the same events on both.
            await wait_until(
                _async(lambda: _event_ids(stream_a) == _event_ids(stream_b)),
                "the same changes on both streams",
            )
            assert len(_event_ids(stream_a)) >= LEARNERS

        # Derived once in effect: the final records are what the statements say, on both APIs.
        for api in apis:
            answer = await api.get("/progress", params={"course": course, "limit": "1000"})
            assert answer.status_code == 200, answer.text
            records = answer.json()["records"]
            assert {r["learner"] for r in records} == keys
            for record in records:
                assert record["status"] == "completed", record
                assert record["percent"] == 100, record
                assert (record["viewed"], record["required"]) == (ITEMS, ITEMS), record
                assert record["attempts"] == 1, record
        # Every statement is stored once, whichever API it came through.
        for api in apis:
            page = await api.get("/xapi/statements", params={"activity": quiz, "limit": "1000"})
            assert len(page.json()["statements"]) == LEARNERS


def _event_ids(stream: EventStream) -> set[str]:
    return {e["id"] for e in stream.events if not e["record"].get("probe")}


def _async(check: Any) -> Any:
    async def run() -> bool:
        return bool(check())

    return run


async def test_consistent_through_is_truthful_across_processes(scale_out: ScaleOut) -> None:
    stack = scale_out
    registration = str(uuid.uuid4())
    verb = f"http://example.com/verbs/consistency-{uuid.uuid4().hex[:8]}"
    batches, batch_size = 20, 30

    def batch() -> list[dict[str, Any]]:
        return [
            {
                "actor": {"objectType": "Agent", "mbox": "mailto:writer@example.com"},
                "verb": {"id": verb},
                "object": {"objectType": "Activity", "id": "http://example.com/consistency"},
                "context": {"registration": registration},
            }
            for _ in range(batch_size)
        ]

    query = {"verb": verb, "limit": "1000"}
    observations: list[tuple[str, set[str]]] = []
    async with stack.client(0) as api_a, stack.client(1) as api_b:
        writing = True

        async def write_through_b() -> None:
            nonlocal writing
            try:
                for _ in range(batches):
                    answer = await api_b.post("/xapi/statements", json=batch())
                    assert answer.status_code == 200, answer.text
                    # A POST's value (its own stored key on the embedded store) vouches for
                    # every statement stored at or before it, to any read that starts after.
                    through = answer.headers["X-Experience-API-Consistent-Through"]
                    after = await api_a.get("/xapi/statements", params=query)
                    assert after.status_code == 200, after.text
                    observations.append((through, {s["id"] for s in after.json()["statements"]}))
            finally:
                writing = False

        async def read_through_a() -> None:
            while writing:
                answer = await api_a.get("/xapi/statements", params=query)
                assert answer.status_code == 200, answer.text
                observations.append(
                    (
                        answer.headers["X-Experience-API-Consistent-Through"],
                        {s["id"] for s in answer.json()["statements"]},
                    )
                )

        await asyncio.gather(write_through_b(), read_through_a())
        final = await api_a.get("/xapi/statements", params=query)
        stored = {s["id"]: s["stored"] for s in final.json()["statements"]}
    assert len(stored) == batches * batch_size and observations
    from lrs.xapi.timestamps import parse_timestamp

    missing = []
    for through, seen in observations:
        limit = parse_timestamp(through)
        vouched = {i for i, at in stored.items() if parse_timestamp(at) <= limit}
        missing += sorted(vouched - seen)
    assert not missing, f"{len(missing)} statements stored before the header's value were absent"
