"""All-or-nothing statement batches under concurrency (design notes 1.2; issue 12, "race that
loses an acknowledged statement"): a statement is visible to readers, to other requests'
equivalence checks and to the outbox only once its batch committed, so

- a batch that fails on a conflict leaves nothing anyone saw, and
- a statement whose request was acknowledged is stored, for good.

The race: batch X = [a, b'] where b' conflicts with b, which another request is storing, while
a third client re-sends a. Before, X inserted a, met b, and deleted a again; a re-send of a that
arrived in between found a, judged it equivalent and answered 204: a was then gone for good.

The in-memory double never yields to the event loop, so every storage call is wrapped to pause
for a random number of turns (as the progress properties do): that is what lets the three
requests interleave. The embedded store runs each batch as one transaction.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest

from lrs.config import Settings
from lrs.ingestion import IngestionError
from lrs.services import build_services
from lrs.storage.credentials import Credential
from lrs.storage.database import Collection, Database, open_database
from tests.test_progress_properties import InterleavingCollection, Scheduler

ROUNDS = 60
VERB = "http://adlnet.gov/expapi/verbs/experienced"
OTHER = "http://adlnet.gov/expapi/verbs/completed"
CREDENTIAL = Credential(
    key="race",
    store="default",
    scopes=frozenset({"all"}),
    name="race",
    authority={"objectType": "Agent", "account": {"homePage": "http://lrs.test", "name": "r"}},
)


def _statement(statement_id: str, verb: str = VERB) -> dict[str, Any]:
    return {
        "id": statement_id,
        "actor": {"mbox": "mailto:racer@example.com"},
        "verb": {"id": verb},
        "object": {"id": "http://example.com/race"},
        "timestamp": "2026-01-01T10:00:00Z",
    }


def _interleaving_memory(rng: random.Random) -> Database:
    from mongomock_motor import AsyncMongoMockClient

    raw = AsyncMongoMockClient()["race"]
    scheduler = Scheduler(rng)
    return Database("memory", lambda name: InterleavingCollection(Collection(raw[name]), scheduler))  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "embedded"])
async def services(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    settings = Settings(storage=request.param, data_dir=tmp_path, redis_url=None)
    database = (
        _interleaving_memory(random.Random(7))
        if request.param == "memory"
        else open_database(settings)
    )
    built = build_services(settings, database)
    # No derivation or forwarding: only the write path is under test.
    built.after_store.clear()
    built.after_forward.clear()
    await built.start(background=False)
    yield built
    await built.close()


async def _store(services: Any, statements: list[dict[str, Any]]) -> str:
    try:
        await services.ingestion.store(CREDENTIAL, statements, version="1.0.3")
    except IngestionError as exc:
        return str(exc.status)
    return "ok"


async def test_no_acknowledged_statement_is_lost_and_no_failed_batch_is_seen(
    services: Any,
) -> None:
    repository = services.statements
    lost: list[str] = []
    seen_from_failed_batches: list[str] = []
    outcomes: dict[str, int] = {}
    rng = random.Random(11)
    for _ in range(ROUNDS):
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        sightings: list[tuple[str, str]] = []
        done = asyncio.Event()

        async def watch(
            a: str = a,
            b: str = b,
            done: asyncio.Event = done,
            sightings: list[tuple[str, str]] = sightings,
        ) -> None:
            # A reader polling meanwhile: what it sees must belong to committed batches.
            while not done.is_set():
                for statement_id in (a, b):
                    found = await repository.get("default", statement_id, voided=False)
                    if found is not None:
                        sightings.append((statement_id, found["verb"]["id"]))
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        requests = {
            "b": [_statement(b)],
            "x": [_statement(a), _statement(b, OTHER)],
            "a": [_statement(a)],
        }
        order = rng.sample(list(requests), 3)  # who gets to the store first varies
        answers = dict(
            zip(
                order,
                await asyncio.gather(*(_store(services, requests[name]) for name in order)),
                strict=True,
            )
        )
        first_b, batch_x, resend_a = answers["b"], answers["x"], answers["a"]
        done.set()
        await watcher
        key = f"b={first_b} x={batch_x} a={resend_a}"
        outcomes[key] = outcomes.get(key, 0) + 1
        stored_a = await repository.get("default", a, voided=False)
        stored_b = await repository.get("default", b, voided=False)
        # Exactly one of the two versions of b won; nothing is half stored.
        assert (first_b == "ok") != (batch_x == "ok"), key
        assert stored_b is not None
        assert stored_b["verb"]["id"] == (VERB if first_b == "ok" else OTHER), key
        # Every acknowledged statement is there.
        if (batch_x == "ok" or resend_a == "ok") and stored_a is None:
            lost.append(key)
        if batch_x != "ok" and resend_a != "ok":
            assert stored_a is None, key
        # A failed batch was never visible, not even for a moment.
        if batch_x != "ok":
            seen_from_failed_batches += [
                f"{key}: {i}" for i, verb in sightings if i == b and verb == OTHER
            ]
            if resend_a != "ok":
                seen_from_failed_batches += [f"{key}: {i}" for i, _ in sightings if i == a]
    assert not lost, lost
    assert not seen_from_failed_batches, seen_from_failed_batches
    # The race was really run: both orders of b's two writers happened.
    assert any("b=ok" in k for k in outcomes) and any("x=ok" in k for k in outcomes), outcomes


async def test_a_batch_whose_writer_died_is_aborted_and_frees_its_ids(tmp_path: Any) -> None:
    """MongoDB protocol: a pending batch past its lease (its writer died mid-write) is aborted
    by the next writer of one of its ids, and by the recovery sweep; nothing of it shows."""
    settings = Settings(storage="memory", redis_url=None, statement_write_lease=0.05)
    built = build_services(settings)
    built.after_store.clear()
    built.after_forward.clear()
    await built.start(background=False)
    try:
        a = str(uuid.uuid4())
        work = built.statements.database.run
        from lrs.storage import statement_writes

        # A writer that stops right after inserting its invisible documents (a kill -9).
        unit = statement_writes.commit_batch(
            built.database.context,
            "default",
            [_statement(a, OTHER)],
            lambda *_: True,
            built.statements.write_lease_micros,
        )
        ops = 0
        op = next(unit)
        while True:  # drive by hand until the pending insert, then abandon
            result = await built.database._execute(op)
            ops += 1
            if getattr(op, "method", "") == "insert_many":
                break
            op = unit.send(result)
        assert await built.statements.get("default", a, voided=False) is None
        await asyncio.sleep(0.1)  # its lease runs out
        assert await _store(built, [_statement(a)]) == "ok"
        stored = await built.statements.get("default", a, voided=False)
        assert stored is not None and stored["verb"]["id"] == VERB
        assert await built.database["statement_batches"].count({}) == 0
        assert ops > 1 and work is not None
    finally:
        await built.close()
