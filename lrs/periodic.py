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
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log.warning("%s failed: %s", self._what, exc)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task is None:
            return
        # A flag as well as cancel(): Python 3.11's wait_for (in a step, e.g. a broker call
        # with a timeout) can swallow a cancellation that races with its timeout; the loop
        # then went on, and shutdown waited for it for ever.
        self._stopping = True
        while not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            self._task.result()
