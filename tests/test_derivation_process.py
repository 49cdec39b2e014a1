"""`LRS_DERIVATION=process` (issue 10): the API processes only store, and a derivation process
beside them derives what the outbox owes (lrs.derivation_process). Statements stored while the
derivation process is down are derived when it is back; SSE clients of the API see the changes
through the store's change sequence (lrs.progress.live)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from lrs.api.courses import save_course
from lrs.config import Settings
from lrs.derivation_process import (
    DERIVATION_CACHE_MIB,
    HEARTBEAT_PREFIX,
    derive_forever,
    deriving_settings,
)
from lrs.progress.catalogue import CourseDefinition
from lrs.progress.dispatch import ElsewhereDispatcher, InProcessDispatcher
from lrs.progress.live import StorePollingBus
from lrs.server import serving_settings
from lrs.services import build_services
from lrs.storage import heartbeats
from tests.test_progress_e2e import EventStream, basic, child_env, start_api_process
from tests.test_progress_properties import CREDENTIAL, STORE

COURSE = "http://example.com/courses/derivation-process"
MODULE = f"{COURSE}/m1"
PAGES = [f"{COURSE}/page{i}" for i in range(3)]


def _statement(learner: str, page: str, minute: int) -> dict[str, Any]:
    return {
        "actor": {"mbox": learner},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
        "object": {"id": page},
        "timestamp": f"2026-01-01T10:{minute:02d}:00Z",
    }


async def _until(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.02)


def test_lrs_serve_derives_in_a_process_of_its_own_on_several_cores_by_default(
    tmp_path: Path,
) -> None:
    embedded = Settings(storage="embedded", data_dir=tmp_path, redis_url=None)
    assert serving_settings(embedded, cores=2).derivation_mode == "process"
    assert serving_settings(embedded, cores=1).derivation_mode == "inprocess"
    chosen = embedded.model_copy(update={"derivation": "inprocess"})
    assert serving_settings(chosen, cores=8).derivation_mode == "inprocess"
    with_redis = embedded.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"})
    assert serving_settings(with_redis, cores=8).derivation_mode == "celery"
    mongodb = Settings(mongodb_url="mongodb://db.invalid:27017", redis_url=None)
    assert serving_settings(mongodb, cores=8).derivation_mode == "inprocess"
    memory = Settings(storage="memory", redis_url=None, derivation="process")
    with pytest.raises(ValueError, match="needs a store processes share"):
        serving_settings(memory, cores=8)


def test_only_the_api_waits_for_the_disk_at_each_commit() -> None:
    """The API acknowledges statements, so its commits are synced (the default, or what the
    operator chose); the derivation process acknowledges nothing and does not wait."""
    settings = Settings(storage="embedded", redis_url=None, derivation="process")
    assert settings.embedded_synchronous == "full"
    assert deriving_settings(settings).embedded_synchronous == "normal"
    assert settings.embedded_synchronous == "full"  # the API's own settings are left alone


def test_the_derivation_process_keeps_a_smaller_page_cache() -> None:
    """Its rounds read each statement and record once: a large cache only grew its memory.
    An operator's smaller cache wins."""
    settings = Settings(storage="embedded", redis_url=None, derivation="process")
    assert deriving_settings(settings).embedded_cache_mib == DERIVATION_CACHE_MIB < 64
    assert settings.embedded_cache_mib == 64
    tiny = settings.model_copy(update={"embedded_cache_mib": 4})
    assert deriving_settings(tiny).embedded_cache_mib == 4


async def _units_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, learners: int
) -> list[list[str]]:
    """One round deriving one statement for each of `learners` learners (one pair each) in the
    derivation process's way (brief writes); the learners of each publication, in order."""
    from lrs.progress import deriver as deriver_module

    monkeypatch.setattr(deriver_module, "_ONE_UNIT", 0)
    settings = Settings(storage="embedded", data_dir=tmp_path, redis_url=None, derivation="process")
    api = build_services(settings)
    deriving = build_services(deriving_settings(settings))
    deriving.deriver.brief_writes = True
    await api.start()
    await deriving.start(background=False)
    published: list[list[str]] = []
    publish_many = deriving.bus.publish_many

    async def recording(store: str, events: list[dict[str, Any]]) -> None:
        published.append(sorted(event["record"]["learner"] for event in events))
        await publish_many(store, events)

    monkeypatch.setattr(deriving.bus, "publish_many", recording)
    try:
        definition = {"title": "Units", "modules": [{"id": MODULE, "content": PAGES}]}
        course = CourseDefinition.model_validate(definition).to_course(COURSE)
        await api.catalogue.put(STORE, course, definition)
        mboxes = [f"mailto:u{i}@example.com" for i in range(learners)]
        batch = [_statement(mbox, PAGES[0], 0) for mbox in mboxes]
        stored = await api.ingestion.store(CREDENTIAL, batch, version="1.0.3", as_list=True)
        ids = [statement["id"] for statement in stored.statements]
        assert await deriving.deriver.derive_statements(STORE, ids) == learners
        assert sorted(sum(published, [])) == sorted(f"mbox:{mbox}" for mbox in mboxes)
        return published
    finally:
        await deriving.close()
        await api.close()


async def test_a_large_round_publishes_and_lets_go_of_each_unit_once_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog's round runs as several units of pairs; each unit's records go live as soon
    as they are written, and the round does not hold them to its end (the derivation
    process's memory under a backlog). Forced here on a round of five pairs, two per unit."""
    from lrs.progress import deriver as deriver_module

    monkeypatch.setattr(deriver_module, "_APPLY_CHUNK", 2)
    published = await _units_published(tmp_path, monkeypatch, 5)
    assert [len(unit) for unit in published] == [2, 2, 1]


async def test_units_hold_fewer_pairs_where_records_are_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A learner's record grows with the items they touched: after a unit whose records hold
    many items, the next units take fewer pairs (about _UNIT_ITEMS items each). Here records
    list the module's 3 items and a unit is meant to hold 6: 4 pairs, then 2 at a time."""
    from lrs.progress import deriver as deriver_module

    monkeypatch.setattr(deriver_module, "_APPLY_CHUNK", 4)
    monkeypatch.setattr(deriver_module, "_UNIT_ITEMS", 2 * len(PAGES))
    published = await _units_published(tmp_path, monkeypatch, 9)
    assert [len(unit) for unit in published] == [4, 2, 2, 1]


async def test_the_api_only_stores_and_the_derivation_process_derives(tmp_path: Path) -> None:
    """Two sets of services on one data directory, as `lrs serve` runs them in two processes:
    the API's hands nothing over (the outbox entry stays), the deriver's finds it, derives it,
    and the API's live bus delivers the change to its subscriber."""
    settings = Settings(storage="embedded", data_dir=tmp_path, redis_url=None, derivation="process")
    api = build_services(settings)
    deriver = build_services(deriving_settings(settings))
    deriver.deriver.brief_writes = True
    assert isinstance(api.dispatcher, ElsewhereDispatcher)
    assert isinstance(api.bus, StorePollingBus)
    assert isinstance(deriver.dispatcher, InProcessDispatcher)
    api.bus.interval = 0.02
    await api.start()
    await deriver.start(background=False)
    deriving: asyncio.Task[None] | None = None
    try:
        definition = {"title": "Process", "modules": [{"id": MODULE, "content": PAGES}]}
        course = CourseDefinition.model_validate(definition).to_course(COURSE)
        await api.catalogue.put(STORE, course, definition)
        async with api.bus.subscribe(STORE) as events:
            learners = [f"mailto:l{i}@example.com" for i in range(3)]
            for minute, page in enumerate(PAGES):
                batch = [_statement(learner, page, minute) for learner in learners]
                await api.ingestion.store(CREDENTIAL, batch, version="1.0.3", as_list=True)
            # Nothing derives in the API: the outbox holds the batches, no record exists.
            await asyncio.sleep(0.2)
            underived, _ = await api.statements.outbox.backlog("derive")
            assert underived == 3 * len(PAGES)
            assert await api.progress.find(STORE, course=COURSE, limit=100) == []

            deriving = asyncio.create_task(derive_forever(deriver, poll=0.005))

            async def derived() -> bool:
                # The outbox entries go once the records are written, in the next unit.
                if (await api.statements.outbox.backlog("derive"))[0]:
                    return False
                records = await api.progress.find(STORE, course=COURSE, limit=100)
                return len(records) == 3 and {r["status"] for r in records} == {"completed"}

            await _until(derived)

            completed: set[str] = set()
            while completed != {f"mbox:{learner}" for learner in learners}:
                _, event = await asyncio.wait_for(events.get(), 10)
                if event["record"]["status"] == "completed":
                    completed.add(event["record"]["learner"])

            # A course redefined through the API is re-derived by the derivation process too
            # (its pending marker is the hand-over): a fourth page makes everyone in progress.
            definition["modules"][0]["content"] = [*PAGES, f"{COURSE}/page3"]
            course = CourseDefinition.model_validate(definition).to_course(COURSE)
            await save_course(api, STORE, course, definition)

            async def rederived() -> bool:
                records = await api.progress.find(STORE, course=COURSE, limit=100)
                return {(r["status"], r["required"]) for r in records} == {("in_progress", 4)}

            await _until(rederived)
        beats = await heartbeats.latest(api.database)
        here = f"{HEARTBEAT_PREFIX}{socket.gethostname()}:{os.getpid()}"
        assert [b["name"] for b in beats] == [here]
    finally:
        if deriving is not None:
            deriving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deriving
        await deriver.close()
        await api.close()


async def test_lrs_serve_runs_a_derivation_process_that_is_replaced_when_it_dies(
    tmp_path: Path,
) -> None:
    key, secret = "process", secrets.token_urlsafe(18)
    env = child_env(
        LRS_STORAGE="embedded",
        LRS_DATA_DIR=str(tmp_path / "data"),
        LRS_ADMIN_KEY=key,
        LRS_ADMIN_SECRET=secret,
    )
    # Ready: the derivation process has beaten (GET /ready needs its heartbeat).
    server = start_api_process(
        env, tmp_path, "serve", args=("--derivation", "process"), ready_path="/ready"
    )
    base_url = server.base_url
    try:
        headers = {"Authorization": basic(key, secret), "X-Experience-API-Version": "1.0.3"}
        definition = {"title": "Process", "modules": [{"id": MODULE, "content": PAGES}]}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=15) as client:
            answer = await client.put(f"/courses/{quote(COURSE, safe='')}", json=definition)
            assert answer.status_code == 201, answer.text
            ready = (await client.get("/ready")).json()["checks"]["workers"]
            assert ready["mode"] == "process", ready
            (name,) = ready["workers"]
            deriver_pid = int(name.rsplit(":", 1)[1])

            async with EventStream(client, {"course": COURSE}) as stream:
                sent = await client.post(
                    "/xapi/statements", json=_statement("mailto:first@example.com", PAGES[0], 0)
                )
                assert sent.status_code == 200, sent.text
                await stream.wait_for(
                    lambda record: record["learner"] == "mbox:mailto:first@example.com"
                )

                # The derivation process dies; what is stored meanwhile waits in the outbox.
                os.kill(deriver_pid, signal.SIGKILL)
                learners = [f"mailto:later{i}@example.com" for i in range(4)]
                batch = [
                    _statement(learner, page, minute)
                    for minute, page in enumerate(PAGES)
                    for learner in learners
                ]
                sent = await client.post("/xapi/statements", json=batch)
                assert sent.status_code == 200, sent.text

                def all_completed(events: list[dict[str, Any]]) -> bool:
                    done = {
                        e["record"]["learner"]
                        for e in events
                        if e["record"]["status"] == "completed"
                    }
                    return {f"mbox:{learner}" for learner in learners} <= done

                await stream.wait_for(lambda _: all_completed(stream.events))
            listed = await client.get("/progress", params={"course": COURSE, "limit": "100"})
            records = {r["learner"]: r["status"] for r in listed.json()["records"]}
            assert records == {
                "mbox:mailto:first@example.com": "in_progress",
                **{f"mbox:{learner}": "completed" for learner in learners},
            }
        assert re.search(rf"the derivation process \(pid {deriver_pid}\) ended", server.text())
    finally:
        server.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.process.wait, 20)
        server.stop()
    assert server.process.returncode == 0, server.text()
    assert "Traceback" not in server.text(), server.text()


async def test_the_heartbeat_goes_on_while_a_long_backlog_is_derived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look at the outbox under a large backlog lasts as long as the backlog: the heartbeat
    that /ready checks must not wait for it (the API would be reported not ready under load)."""
    from lrs import derivation_process

    monkeypatch.setattr(derivation_process, "HEARTBEAT_SECONDS", 0.02)
    settings = Settings(storage="embedded", data_dir=tmp_path, redis_url=None, derivation="process")
    services = build_services(deriving_settings(settings))
    await services.start(background=False)
    looking = asyncio.Event()

    async def endless_look(grace: float | None = None) -> int:
        looking.set()
        await asyncio.sleep(3600)
        return 0

    monkeypatch.setattr(services.dispatcher, "sweep", endless_look)
    task = asyncio.create_task(derive_forever(services))
    try:
        await asyncio.wait_for(looking.wait(), 10)

        async def beat_time() -> float:
            docs = await heartbeats.latest(services.database)
            return max((doc["at"] for doc in docs), default=0.0)

        first = await beat_time()
        await _until(lambda: _later(beat_time, first))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await services.close()


async def _later(read: Any, than: float) -> bool:
    return await read() > than
