"""Live progress events for several API processes on one embedded store, without Redis
(`lrs serve --workers N`).

With Redis, every process publishes its changes on pub/sub and every process relays them to
its SSE clients (lrs.events.RedisEventBus). Without it, the store itself is the channel: every
change of a progress record takes the next number of its store's change sequence (`seq`,
allocated in the same transaction as the write, so numbers follow commit order on the embedded
store), and each process polls the stores its SSE clients read for the records whose number
passed the last one it saw. A change reaches a client within a polling interval, whichever
process derived it.

On MongoDB the numbers are allocated before the writes commit, so a slow writer can commit a
number below one a poller has already passed: there, run Redis (as production does) for live
events; this bus is meant for the embedded store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from lrs.events import EventBus
from lrs.progress.deriver import event_id, public_record
from lrs.storage.progress import ProgressRepository

log = logging.getLogger("lrs.live")

# Only while SSE clients listen: one indexed read per store per look (about 1% of a core).
POLL_SECONDS = 0.02
_PAGE = 1000


class StorePollingBus(EventBus):
    def __init__(self, progress: ProgressRepository, interval: float = POLL_SECONDS) -> None:
        super().__init__()
        self.progress = progress
        self.interval = interval
        self._readers: collections.Counter[str] = collections.Counter()
        self._cursors: dict[str, int] = {}
        self._poller: asyncio.Task[None] | None = None

    async def publish(self, store: str, event: dict[str, Any]) -> None:
        """Nothing to send: the record is in the store, where every process finds it."""

    async def publish_many(self, store: str, events: list[dict[str, Any]]) -> None:
        """As `publish`."""

    @contextlib.asynccontextmanager
    async def subscribe(
        self, store: str | None = None
    ) -> AsyncIterator[asyncio.Queue[tuple[str, dict[str, Any]]]]:
        if store is not None and store not in self._cursors:
            self._cursors[store] = await self.progress.last_seq(store)
        if store is not None:
            self._readers[store] += 1
        try:
            async with super().subscribe(store) as queue:
                yield queue
        finally:
            if store is not None:
                self._readers[store] -= 1
                if self._readers[store] <= 0:
                    del self._readers[store]
                    self._cursors.pop(store, None)

    async def start(self) -> None:
        await super().start()
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for store in list(self._readers):
                try:
                    await self._catch_up(store)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the store is busy or away: the next round tries again
                    log.exception("could not read progress changes of store %s", store)

    async def _catch_up(self, store: str) -> None:
        while store in self._cursors:
            cursor = self._cursors[store]
            # Item lists as stored: each event writes its record's list out as is.
            records = await self.progress.changed_since(
                store, cursor, limit=_PAGE, items_as_text=True
            )
            for record in records:
                self.deliver(store, {"id": event_id(record), "record": public_record(record)})
            if records and store in self._cursors:
                self._cursors[store] = max(cursor, *(int(r.get("seq") or 0) for r in records))
            if len(records) < _PAGE:
                return

    async def close(self) -> None:
        self.end_streams()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
