"""What drives federation: an asyncio loop inside the service (embedded mode), or Celery tasks
(production), mirroring the progress outbox (lrs.progress.dispatch).

Both only decide *when* work runs; *what* is durable lives in the database: the `forward`
outbox entry of each statement batch, the delivery groups, the sources' checkpoints. So the
in-process loop can stop at any point, and a Celery task can be lost with its broker, and a
sweep finds the work again:
- batches whose entry is still there `grace` seconds after they were stored are fanned out;
- destinations whose creation did not finish its catch-up are caught up;
- destinations with due deliveries get a delivery pass, sources due for a poll a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from lrs import broker
from lrs.periodic import Periodic
from lrs.storage.federation import now_micros
from lrs.storage.outbox import Owed

if TYPE_CHECKING:
    from lrs.federation.service import Federation

log = logging.getLogger("lrs.federation")

_SWEEP_PAGE = 1000


class FederationDriver:
    def __init__(self, federation: Federation, interval: float, grace: float) -> None:
        self.federation = federation
        self.interval = interval
        self.grace = grace

    def after_store(self, store: str, ids: list[str], token: str) -> None:
        """A batch committed (its outbox entry is `<token>:forward`): fan it out soon. Must not
        wait on I/O (it runs before the request is answered)."""
        raise NotImplementedError

    async def wake_destination(self, destination_id: str) -> None:
        """Deliver to a destination soon (after a replay, or when it is enabled again)."""
        raise NotImplementedError

    async def wake_source(self, source_id: str) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _left_behind(self) -> list[Owed]:
        """Fan-outs owed for longer than the grace period (one page, oldest first)."""
        older_than = now_micros() - int(self.grace * 1e6)
        entries = await self.federation.statements.outbox.pending(
            "forward", older_than=older_than, limit=_SWEEP_PAGE
        )
        return [Owed(e["store"], list(e["ids"]), [e["_id"]]) for e in entries]

    async def _catch_up(self) -> list[str]:
        """Finish the creation of destinations whose process died before it queued the
        statements stored while they were being saved; returns those that got work."""
        older_than = now_micros() - int(self.grace * 1e6)  # not one being created right now
        touched = []
        for doc in await self.federation.destinations.not_caught_up(older_than):
            if await self.federation.forwarder.catch_up(doc):
                touched.append(doc["_id"])
        return touched

    async def _due_destinations(self) -> list[str]:
        now = now_micros()
        return [
            doc["_id"]
            for doc in await self.federation.destinations.all()
            if doc.get("enabled") and (doc.get("hold_until") or 0) <= now
        ]


class InProcessFederation(FederationDriver):
    """Embedded mode: fan out right after each write, deliver and poll on asyncio tasks, one
    per destination or source at a time, and sweep every `interval` seconds."""

    def __init__(
        self, federation: Federation, interval: float, grace: float, concurrency: int = 8
    ) -> None:
        super().__init__(federation, interval, grace)
        self.concurrency = concurrency
        self._queue: list[Owed] = []
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._again: set[tuple[str, str]] = set()
        self._limit: asyncio.Semaphore | None = None
        self._last_sweep = 0.0

    @property
    def started(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    def after_store(self, store: str, ids: list[str], token: str) -> None:
        # Not started (the CLI, a worker): the entry stays, the next server's sweep finds it.
        if ids and self.started and self._wake is not None:
            self._queue.append(Owed(store, list(ids), [f"{token}:forward"]))
            self._wake.set()

    async def wake_destination(self, destination_id: str) -> None:
        if self.started:
            self._spawn(("destination", destination_id))

    async def wake_source(self, source_id: str) -> None:
        if self.started:
            self._spawn(("source", source_id))

    async def start(self) -> None:
        self._stopping = False
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(self.concurrency)
        self._loop_task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # storage trouble: everything is still marked, try next round
                log.exception("federation round failed")

    async def run_once(self) -> None:
        await self._fan_out_queued()
        if time.monotonic() - self._last_sweep >= self.interval:
            self._last_sweep = time.monotonic()
            while left := await self._left_behind():
                for owed in left:
                    await self._fan_out(owed)
            await self._catch_up()  # its destinations are due: spawned below
        for destination_id in await self._due_destinations():
            self._spawn(("destination", destination_id))
        for doc in await self.federation.sources.due(now_micros()):
            self._spawn(("source", doc["_id"]))

    async def _fan_out_queued(self) -> None:
        queued, self._queue = self._queue, []
        for owed in _merged(queued):
            try:
                await self._fan_out(owed)
            except asyncio.CancelledError:
                raise
            except Exception:  # the entries stay: the sweep fans them out after the grace
                log.exception("fan-out of %d statements failed", len(owed.ids))

    async def _fan_out(self, owed: Owed) -> None:
        forwarder = self.federation.forwarder
        for destination_id in await forwarder.fan_out(owed.store, owed.ids, owed.entries):
            self._spawn(("destination", destination_id))

    def _spawn(self, key: tuple[str, str]) -> None:
        """One task per destination or source; a wake-up while it runs makes it go round again
        instead of starting a second one."""
        task = self._tasks.get(key)
        if task is not None and not task.done():
            self._again.add(key)
            return
        self._tasks[key] = asyncio.create_task(self._work(key))

    async def _work(self, key: tuple[str, str]) -> None:
        assert self._limit is not None
        kind, doc_id = key
        step: Callable[[], Awaitable[bool]]
        if kind == "destination":

            async def step() -> bool:
                return await self.federation.forwarder.deliver(doc_id)
        else:

            async def step() -> bool:
                report = await self.federation.puller.pull(doc_id)
                return bool(report and report.more)

        async with self._limit:
            while True:
                self._again.discard(key)
                try:
                    more = await step()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("federation %s %s failed", kind, doc_id)
                    more = False
                if not more and key not in self._again:
                    return

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until no fan-out is queued and no delivery or poll runs (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._queue and all(task.done() for task in self._tasks.values()):
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._loop_task is None:
            return
        # A flag as well as cancel(): Python 3.11's wait_for can swallow a cancellation that
        # races with its timeout, and the loop would then go on for ever.
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        while not self._loop_task.done():
            self._loop_task.cancel()
            await asyncio.wait({self._loop_task}, timeout=1.0)
        # What was queued is still marked in the database; fanning it out now just saves the
        # next start a sweep.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._fan_out_queued(), 5.0)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()  # an interrupted delivery is sent again: delivery is at least once
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._loop_task = None


class CeleryFederation(FederationDriver):
    """Production: Celery tasks do the work (workers/federation_tasks.py). The API enqueues a
    fan-out after each write; the sweep (beat, and this process) fans out itself what is still
    marked after the grace (database work only; enqueueing it instead would pile up the same
    ids on every round while no worker runs), then enqueues a delivery pass for each destination
    with due work and a poll for each due source. A broker outage is logged, never raised: the
    database still says what is due."""

    def __init__(
        self,
        federation: Federation,
        interval: float,
        grace: float,
        publisher: broker.TaskPublisher | broker.DirectPublisher | None = None,
    ) -> None:
        super().__init__(federation, interval, grace)
        self.publisher = publisher or broker.TaskPublisher()
        self._sweeper = Periodic(self.sweep, interval, log, "federation sweep")

    def after_store(self, store: str, ids: list[str], token: str) -> None:
        if ids:
            self.publisher.send(broker.FAN_OUT, [store, list(ids), [f"{token}:forward"]])

    async def wake_destination(self, destination_id: str) -> None:
        self.publisher.send(broker.DELIVER, [destination_id])

    async def wake_source(self, source_id: str) -> None:
        self.publisher.send(broker.PULL, [source_id])

    async def sweep(self) -> int:
        """Fan out what was left marked, enqueue what is due; returns the number of tasks
        enqueued."""
        enqueued = 0
        for owed in await self._left_behind():
            await self.federation.forwarder.fan_out(owed.store, owed.ids, owed.entries)
        await self._catch_up()  # database work too; the deliveries are enqueued below
        for destination_id in await self._due_destinations():
            if await self.federation.forwarder.has_due(destination_id):
                enqueued += self.publisher.send(broker.DELIVER, [destination_id])
        for doc in await self.federation.sources.due(now_micros()):
            enqueued += self.publisher.send(broker.PULL, [doc["_id"]])
        return enqueued

    async def start(self) -> None:
        self._sweeper.start()

    async def close(self) -> None:
        await self._sweeper.stop()
        await asyncio.to_thread(self.publisher.close)


def _merged(owed: list[Owed]) -> list[Owed]:
    """Queued fan-outs of one store together, in pages of at most `_SWEEP_PAGE` statements."""
    by_store: dict[str, list[Owed]] = defaultdict(list)
    for item in owed:
        by_store[item.store].append(item)
    merged: list[Owed] = []
    for store, items in by_store.items():
        page = Owed(store, [], [])
        for item in items:
            if page.ids and len(page.ids) + len(item.ids) > _SWEEP_PAGE:
                merged.append(page)
                page = Owed(store, [], [])
            page.ids.extend(item.ids)
            page.entries.extend(item.entries)
        merged.append(page)
    return merged
