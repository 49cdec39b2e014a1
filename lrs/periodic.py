"""A background task that runs one step every so many seconds (the outbox and federation
sweeps): a failing step is logged and tried again next time, never the end of the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any


class Periodic:
    def __init__(
        self, step: Callable[[], Awaitable[Any]], interval: float, log: logging.Logger, what: str
    ) -> None:
        self._step = step
        self._interval = interval
        self._log = log
        self._what = what
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log.warning("%s failed: %s", self._what, exc)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
