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
        assert dispatcher._busy == 0
    finally:
        dispatcher._consumer.cancel()
    derived = [i for kind, _, ids in deriver.calls if kind == "statements" for i in ids]
    assert sorted(derived) == sorted(f"id-{n}" for n in range(40))
    assert len(deriver.calls) < 40
