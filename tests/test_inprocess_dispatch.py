"""The in-process dispatcher merges submissions that queue up while it is busy."""

from __future__ import annotations

import asyncio
from typing import Any

from lrs.progress.dispatch import InProcessDispatcher, _coalesce


class RecordingDeriver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    async def derive_statements(self, store: str, ids: list[str]) -> int:
        self.calls.append(("statements", store, list(ids)))
        await asyncio.sleep(0.01)  # busy long enough for later submissions to queue up
        return 0

    async def derive_course(self, store: str, course_id: str) -> int:
        self.calls.append(("course", store, course_id))
        return 0


def test_coalesce_merges_statements_per_store_and_keeps_courses() -> None:
    items = [
        ("statements", "a", ["1"]),
        ("course", "a", "c1"),
        ("statements", "b", ["2"]),
        ("statements", "a", ["3", "4"]),
    ]
    assert _coalesce(items) == [
        ("statements", "a", ["1", "3", "4"]),
        ("course", "a", "c1"),
        ("statements", "b", ["2"]),
    ]


async def test_every_submitted_statement_is_derived_in_fewer_rounds() -> None:
    deriver = RecordingDeriver()
    dispatcher = InProcessDispatcher(None, None, deriver, sweep_interval=3600)  # type: ignore[arg-type]
    dispatcher._consumer = asyncio.create_task(dispatcher._consume())
    try:
        for n in range(40):
            await dispatcher.submit("s", [f"id-{n}"])
        await dispatcher.idle(timeout=10)
        assert not dispatcher._in_flight  # nothing submitted is still waiting
    finally:
        dispatcher._consumer.cancel()
    derived = [i for kind, _, ids in deriver.calls if kind == "statements" for i in ids]
    assert sorted(derived) == sorted(f"id-{n}" for n in range(40))
    assert len(deriver.calls) < 40


class Underived:
    """The outbox as the sweep reads it: every statement not derived yet, oldest first."""

    def __init__(self, deriver: RecordingDeriver, ids: list[str]) -> None:
        self.deriver = deriver
        self.ids = ids

    async def underived(
        self, older_than: int | None = None, limit: int = 1000, after: Any = None
    ) -> list[dict[str, Any]]:
        derived = {i for kind, _, ids in self.deriver.calls if kind == "statements" for i in ids}
        waiting = [i for i in self.ids if i not in derived]
        if after is not None:
            waiting = [i for i in waiting if i > after[1]]
        return [{"store": "s", "id": i, "stored_key": 1} for i in waiting[:limit]]


class NoCourses:
    async def pending(self, older_than: int) -> list[tuple[str, str]]:
        return []


async def test_the_sweep_does_not_queue_again_what_is_already_queued() -> None:
    deriver = RecordingDeriver()
    ids = [f"id-{n:02d}" for n in range(10)]
    dispatcher = InProcessDispatcher(
        Underived(deriver, ids),  # type: ignore[arg-type]
        NoCourses(),  # type: ignore[arg-type]
        deriver,  # type: ignore[arg-type]
        sweep_interval=3600,
    )
    for i in ids[:6]:
        await dispatcher.submit("s", [i])  # queued behind a busy deriver, not derived yet
    dispatcher._consumer = asyncio.create_task(dispatcher._consume())
    try:
        handed_over = await dispatcher.sweep()
        await dispatcher.idle(timeout=10)
    finally:
        dispatcher._consumer.cancel()
    assert handed_over == 4  # only those nobody had queued
    derived = [i for kind, _, batch in deriver.calls if kind == "statements" for i in batch]
    assert sorted(derived) == ids  # each exactly once
    assert not dispatcher._in_flight
