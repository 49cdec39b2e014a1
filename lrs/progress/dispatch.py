"""Getting stored statements to the derivation: the outbox (design notes section 1).

Every statement is stored with `derived: false`. After the write the API hands the new ids to a
dispatcher; a periodic sweep hands over whatever is still underived after a grace period, so a
statement stored while Redis or every worker was down is derived once they are back, and no
request ever fails because of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from lrs.progress.deriver import Deriver
from lrs.storage.progress import CatalogueRepository
from lrs.storage.statements import StatementRepository

log = logging.getLogger("lrs.dispatch")


class Dispatcher:
    def __init__(
        self,
        statements: StatementRepository,
        catalogue: CatalogueRepository,
        sweep_interval: float,
        grace: float,
    ) -> None:
        self.statements = statements
        self.catalogue = catalogue
        self.sweep_interval = sweep_interval
        self.grace = grace
        self._sweeper: asyncio.Task[None] | None = None

    async def submit(self, store: str, ids: list[str]) -> None:
        raise NotImplementedError

    async def submit_course(self, store: str, course_id: str) -> None:
        """Re-derive a course after its definition changed."""
        raise NotImplementedError

    async def after_store(self, store: str, statements: list[dict[str, Any]]) -> None:
        if statements:
            await self.submit(store, [s["id"] for s in statements])

    async def sweep(self, grace: float | None = None) -> int:
        """Hand over every statement still underived `grace` seconds after it was stored."""
        older_than = int((time.time() - (self.grace if grace is None else grace)) * 1e6)
        total = 0
        for store, course_id in await self.catalogue.pending(older_than):
            await self.submit_course(store, course_id)
        while True:
            docs = await self.statements.underived(older_than=older_than, limit=1000)
            if not docs:
                return total
            by_store: dict[str, list[str]] = defaultdict(list)
            for doc in docs:
                by_store[doc["store"]].append(doc["id"])
            for store, ids in by_store.items():
                await self.submit(store, ids)
            total += len(docs)
            if not await self._sweep_makes_progress(docs):
                return total

    async def _sweep_makes_progress(self, docs: list[dict[str, Any]]) -> bool:
        # With a broker, submitted work is derived later: one page per sweep is enough.
        return False

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox sweep failed: %s", exc)
            await asyncio.sleep(self.sweep_interval)

    async def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


class InProcessDispatcher(Dispatcher):
    """Embedded mode: derive in this process, right after the write, on a background task."""

    def __init__(
        self,
        statements: StatementRepository,
        catalogue: CatalogueRepository,
        deriver: Deriver,
        sweep_interval: float = 30.0,
    ) -> None:
        super().__init__(statements, catalogue, sweep_interval, grace=0.0)
        self.deriver = deriver
        self._queue: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._busy = 0

    async def submit(self, store: str, ids: list[str]) -> None:
        self._busy += 1
        self._queue.put_nowait(("statements", store, ids))

    async def submit_course(self, store: str, course_id: str) -> None:
        self._busy += 1
        self._queue.put_nowait(("course", store, course_id))

    async def _sweep_makes_progress(self, docs: list[dict[str, Any]]) -> bool:
        await self.idle()
        return True

    async def start(self) -> None:
        self._consumer = asyncio.create_task(self._consume())
        await super().start()

    async def _consume(self) -> None:
        while True:
            kind, store, payload = await self._queue.get()
            try:
                if kind == "course":
                    await self.deriver.derive_course(store, payload)
                else:
                    await self.deriver.derive_statements(store, payload)
            except asyncio.CancelledError:
                raise
            except Exception:  # statements stay underived: the sweep retries them
                log.exception("derivation failed (%s in %s)", kind, store)
            finally:
                self._busy -= 1

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted so far is derived (tests, benchmarks, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.idle(timeout=10)
        await super().close()
        if self._consumer:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer


class CeleryDispatcher(Dispatcher):
    """Production: enqueue a Celery task naming the new ids. A broker outage is logged, not
    raised: the statements are stored and the sweep enqueues them again later."""

    def __init__(
        self,
        statements: StatementRepository,
        catalogue: CatalogueRepository,
        sweep_interval: float = 30.0,
        grace: float = 30.0,
    ) -> None:
        super().__init__(statements, catalogue, sweep_interval, grace)

    async def submit(self, store: str, ids: list[str]) -> None:
        from workers.tasks import derive_statements

        try:
            await asyncio.wait_for(
                asyncio.to_thread(_enqueue, derive_statements, [store, ids]), timeout=2.0
            )
        except Exception as exc:
            log.warning("could not enqueue derivation of %d statements (%r)", len(ids), exc)

    async def submit_course(self, store: str, course_id: str) -> None:
        from workers.tasks import derive_course

        try:
            await asyncio.wait_for(
                asyncio.to_thread(_enqueue, derive_course, [store, course_id]), timeout=2.0
            )
        except Exception as exc:  # the course keeps its marker: the sweep enqueues it again
            log.warning("could not enqueue re-derivation of %s (%r)", course_id, exc)


def _enqueue(task: Any, args: list[Any]) -> None:
    """Publish on a connection that does not retry: with the broker down the request goes on at
    once (the outbox sweep re-enqueues later) instead of holding a thread for seconds."""
    app = task.app
    options = {**(app.conf.broker_transport_options or {}), "max_retries": 0}
    with app.connection_for_write(transport_options=options) as connection:
        task.apply_async(args=args, retry=False, connection=connection)
