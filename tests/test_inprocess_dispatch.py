"""The in-process dispatcher merges submissions that queue up while it is busy, and its sweep
leaves alone what is already queued."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lrs.progress import dispatch
from lrs.progress.dispatch import InProcessDispatcher, _coalesce
from lrs.storage.outbox import Owed


class RecordingDeriver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    async def derive_statements(self, store: str, ids: list[str], entries: list[str]) -> int:
        self.calls.append(("statements", store, (list(ids), list(entries))))
        await asyncio.sleep(0.01)  # busy long enough for later submissions to queue up
        return 0

    async def derive_course(self, store: str, course_id: str) -> int:
        self.calls.append(("course", store, course_id))
        return 0

    def derived_ids(self) -> list[str]:
        return [i for kind, _, call in self.calls if kind == "statements" for i in call[0]]


def test_coalesce_merges_statements_per_store_and_keeps_courses() -> None:
    items = [
        ("statements", "a", Owed("a", ["1"], ["e1"])),
        ("course", "a", "c1"),
        ("statements", "b", Owed("b", ["2"], ["e2"])),
        ("statements", "a", Owed("a", ["3", "4"], ["e3"])),
    ]
    assert _coalesce(items) == [
        ("statements", "a", Owed("a", ["1", "3", "4"], ["e1", "e3"])),
        ("course", "a", "c1"),
        ("statements", "b", Owed("b", ["2"], ["e2"])),
    ]


async def test_every_submitted_statement_is_derived_in_fewer_rounds() -> None:
    deriver = RecordingDeriver()
    dispatcher = InProcessDispatcher(None, None, deriver, sweep_interval=3600)  # type: ignore[arg-type]
    dispatcher._consumer = asyncio.create_task(dispatcher._consume())
    try:
        for n in range(40):
            dispatcher.submit(Owed("s", [f"id-{n}"], [f"entry-{n}"]))
        await dispatcher.idle(timeout=10)
        assert not dispatcher._in_flight  # nothing submitted is still waiting
    finally:
        dispatcher._consumer.cancel()
    assert sorted(deriver.derived_ids()) == sorted(f"id-{n}" for n in range(40))
    entries = [e for kind, _, call in deriver.calls if kind == "statements" for e in call[1]]
    assert sorted(entries) == sorted(f"entry-{n}" for n in range(40))
    assert len(deriver.calls) < 40


async def test_under_a_stream_of_requests_a_round_waits_for_the_next_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Requests that follow each other (single POSTs) each submit while the previous round has
    # just ended: the round waits a moment so the next request's statements join it, instead
    # of each request paying a round's fixed cost. A statement that comes alone is derived at
    # once (no wait before the first round). The window is widened so a slow machine cannot
    # make the second submission look unrelated to the first round.
    monkeypatch.setattr(dispatch, "_BUSY_WINDOW", 30.0)
    deriver = RecordingDeriver()
    dispatcher = InProcessDispatcher(None, None, deriver, sweep_interval=3600)  # type: ignore[arg-type]
    dispatcher._consumer = asyncio.create_task(dispatcher._consume())
    try:
        dispatcher.submit(Owed("s", ["first"], ["entry-first"]))
        await dispatcher.idle(timeout=10)
        assert deriver.calls == [("statements", "s", (["first"], ["entry-first"]))]
        dispatcher.submit(Owed("s", ["a"], ["entry-a"]))
        for _ in range(3):
            await asyncio.sleep(0)  # the consumer takes "a" and waits for company
        assert dispatcher._queue.empty()
        dispatcher.submit(Owed("s", ["b"], ["entry-b"]))
        await dispatcher.idle(timeout=10)
    finally:
        dispatcher._consumer.cancel()
    assert deriver.calls[1:] == [("statements", "s", (["a", "b"], ["entry-a", "entry-b"]))]


class Outbox:
    """The outbox as the sweep reads it: an entry per statement until it is derived."""

    def __init__(self, deriver: RecordingDeriver, ids: list[str]) -> None:
        self.deriver = deriver
        self.ids = ids

    async def pending(
        self, kind: str, *, older_than: Any = None, limit: int = 1000, after: Any = None
    ) -> list[dict[str, Any]]:
        if kind != "derive":
            return []
        derived = set(self.deriver.derived_ids())
        waiting = [i for i in self.ids if i not in derived]
        if after is not None:
            waiting = [i for i in waiting if f"entry-{i}" > after[1]]
        return [
            {"_id": f"entry-{i}", "store": "s", "ids": [i], "stored_key": 1}
            for i in waiting[:limit]
        ]


class NoCourses:
    async def pending(self, older_than: int) -> list[tuple[str, str]]:
        return []


def sweeping_dispatcher(deriver: RecordingDeriver, ids: list[str]) -> InProcessDispatcher:
    """A dispatcher whose sweep finds an outbox entry for each of `ids` not derived yet."""
    return InProcessDispatcher(
        Outbox(deriver, ids),  # type: ignore[arg-type]
        NoCourses(),  # type: ignore[arg-type]
        deriver,
        sweep_interval=3600,
    )


async def test_the_sweep_does_not_queue_again_what_is_already_queued() -> None:
    deriver = RecordingDeriver()
    ids = [f"id-{n:02d}" for n in range(10)]
    dispatcher = sweeping_dispatcher(deriver, ids)
    for i in ids[:6]:
        dispatcher.submit(Owed("s", [i], [f"entry-{i}"]))  # queued, not derived yet
    dispatcher._consumer = asyncio.create_task(dispatcher._consume())
    try:
        handed_over = await dispatcher.sweep()
        await dispatcher.idle(timeout=10)
    finally:
        dispatcher._consumer.cancel()
    assert handed_over == 4  # only those nobody had queued
    assert sorted(deriver.derived_ids()) == ids  # each exactly once
    assert not dispatcher._in_flight


async def test_a_round_fed_by_a_sweep_waits_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep hands over all the outbox holds at once (the derivation process is fed only
    so): its round has no company to wait for, even right after another round. A request's
    submission in the same situation still waits, also while a sweep is going on."""
    monkeypatch.setattr(dispatch, "_BUSY_WINDOW", 30.0)
    monkeypatch.setattr(dispatch, "_GATHER_SECONDS", 0.0123)  # a wait told apart by its length
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any, **kwargs: Any) -> Any:
        waits.append(delay)
        return await real_sleep(delay, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    deriver = RecordingDeriver()
    ids = [f"id-{n:02d}" for n in range(10)]
    dispatcher = sweeping_dispatcher(deriver, ids)
    dispatcher._consumer = asyncio.create_task(dispatcher._consume())
    try:
        dispatcher.submit(Owed("s", ["first"], ["entry-first"]))
        await dispatcher.idle(timeout=10)  # a round ended just now
        assert 0.0123 not in waits  # the first round of all waits for nothing
        sweeping = asyncio.create_task(dispatcher.sweep())
        for _ in range(10_000):  # until the sweep's round is being derived
            if len(deriver.calls) == 2:
                break
            await real_sleep(0)
        assert sorted(deriver.derived_ids()) == ["first", *ids]
        assert 0.0123 not in waits
        dispatcher.submit(Owed("s", ["later"], ["entry-later"]))  # a request, mid-sweep
        assert await sweeping == len(ids)
        await dispatcher.idle(timeout=10)
        assert deriver.calls[-1] == ("statements", "s", (["later"], ["entry-later"]))
        assert 0.0123 in waits
    finally:
        dispatcher._consumer.cancel()
