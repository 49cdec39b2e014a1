"""Getting stored statements to the derivation: the outbox (design notes section 1).

Every statement is stored with `derived: false`. After the write the API hands the new ids to a
dispatcher; a periodic sweep hands over whatever is still underived after a grace period, so a
statement stored while Redis or every worker was down is derived once they are back, and no
request ever fails because of them.

With Celery, a statement still underived may simply be waiting in the broker for a worker. So
that the sweep does not add another copy of it at every round while no worker consumes (the
queue would grow without bound), the sweep enqueues a statement (or course) again only once per
`LRS_OUTBOX_REQUEUE_AFTER` seconds, remembered by an expiring marker key in Redis, and enqueues
nothing while the broker's queue already holds `LRS_OUTBOX_QUEUE_CAP` messages no worker took.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from lrs.periodic import Periodic
from lrs.progress.deriver import Deriver
from lrs.storage.database import urgent_storage_calls
from lrs.storage.progress import CatalogueRepository
from lrs.storage.statements import StatementRepository

log = logging.getLogger("lrs.dispatch")


_SWEEP_PAGE = 1000  # underived statements read per sweep page
_SWEEP_MAX_PAGES = 100  # per round: a backlog beyond this waits for the next round


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
        self._sweeper = Periodic(self.sweep, sweep_interval, log, "outbox sweep")

    async def submit(self, store: str, ids: list[str]) -> None:
        raise NotImplementedError

    async def submit_course(self, store: str, course_id: str) -> None:
        """Re-derive a course after its definition changed."""
        raise NotImplementedError

    async def after_store(self, store: str, statements: list[dict[str, Any]]) -> None:
        if statements:
            await self.submit(store, [s["id"] for s in statements])

    async def sweep(self, grace: float | None = None) -> int:
        """Hand over every statement still underived `grace` seconds after it was stored (those
        handed over recently excepted, see `_due`); returns how many were handed over."""
        older_than = int((time.time() - (self.grace if grace is None else grace)) * 1e6)
        total = 0
        if not await self._room_for_more():
            return total
        courses = await self.catalogue.pending(older_than)
        for store, course_id in await self._due("course", courses):
            await self.submit_course(store, course_id)
        after: tuple[int, str] | None = None
        for _ in range(_SWEEP_MAX_PAGES):
            docs = await self.statements.underived(
                older_than=older_than, limit=_SWEEP_PAGE, after=after
            )
            if not docs:
                return total
            due = await self._due("statement", [(doc["store"], doc["id"]) for doc in docs])
            by_store: dict[str, list[str]] = defaultdict(list)
            for store, statement_id in due:
                by_store[store].append(statement_id)
            for store, ids in by_store.items():
                await self._resubmit(store, ids)
            total += len(due)
            # Page on past statements handed over recently (still waiting in the broker), so
            # older ones never hide newer ones that were never handed over.
            after = (docs[-1]["stored_key"], docs[-1]["id"])
            if not await self._sweep_makes_progress(total):
                return total
        return total

    async def _room_for_more(self) -> bool:
        return True

    async def _due(self, kind: str, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (store, id) pairs of a sweep page to hand over this round."""
        return keys

    async def _resubmit(self, store: str, ids: list[str]) -> None:
        await self.submit(store, ids)

    async def _sweep_makes_progress(self, handed_over: int) -> bool:
        # With a broker, submitted work is derived later: a page's worth per round is enough.
        return handed_over < _SWEEP_PAGE

    async def start(self) -> None:
        self._sweeper.start()

    async def close(self) -> None:
        await self._sweeper.stop()


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
        # What is queued or being derived: the sweep leaves it alone (under a backlog it would
        # otherwise queue every waiting statement a second time), and `idle` waits for it.
        self._in_flight: collections.Counter[tuple[str, str, str]] = collections.Counter()

    async def submit(self, store: str, ids: list[str]) -> None:
        self._in_flight.update(("statement", store, i) for i in ids)
        self._queue.put_nowait(("statements", store, ids))

    async def submit_course(self, store: str, course_id: str) -> None:
        self._in_flight[("course", store, course_id)] += 1
        self._queue.put_nowait(("course", store, course_id))

    async def _due(self, kind: str, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(store, key) for store, key in keys if (kind, store, key) not in self._in_flight]

    def _done(self, items: list[tuple[str, str, Any]]) -> None:
        for kind, store, payload in items:
            keys = (
                [("statement", store, i) for i in payload]
                if kind == "statements"
                else [("course", store, payload)]
            )
            self._in_flight.subtract(keys)
            for key in keys:
                if self._in_flight[key] <= 0:
                    del self._in_flight[key]

    async def _sweep_makes_progress(self, handed_over: int) -> bool:
        await self.idle()
        return True

    async def start(self) -> None:
        self._consumer = asyncio.create_task(self._consume())
        await super().start()

    async def _consume(self) -> None:
        urgent_storage_calls()  # this task's reads and writes go ahead of queued requests
        while True:
            items = [await self._queue.get()]
            # Under write load many small submissions queue up: derive them together, so a
            # learner-module pair touched by several requests is recomputed once.
            while not self._queue.empty() and _size(items) < _COALESCE_MAX:
                items.append(self._queue.get_nowait())
            for kind, store, payload in _coalesce(items):
                try:
                    if kind == "course":
                        await self.deriver.derive_course(store, payload)
                    else:
                        await self.deriver.derive_statements(store, payload)
                except asyncio.CancelledError:
                    raise
                except Exception:  # statements stay underived: the sweep retries them
                    log.exception("derivation failed (%s in %s)", kind, store)
            self._done(items)

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted so far is derived (tests, benchmarks, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.idle(timeout=10)
        await super().close()
        if self._consumer:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer


# Statements merged into one derivation round: enough to share work between requests, few
# enough that a round's statements and records stay small in memory.
_COALESCE_MAX = 1000


def _size(items: list[tuple[str, str, Any]]) -> int:
    return sum(len(payload) if kind == "statements" else 1 for kind, _, payload in items)


def _coalesce(items: list[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    """Merge statement submissions per store (in order of first appearance); courses stay."""
    merged: list[tuple[str, str, Any]] = []
    statements: dict[str, list[str]] = {}
    for kind, store, payload in items:
        if kind != "statements":
            merged.append((kind, store, payload))
        elif store in statements:
            statements[store].extend(payload)
        else:
            statements[store] = list(payload)
            merged.append((kind, store, statements[store]))
    return merged


class CeleryDispatcher(Dispatcher):
    """Production: enqueue a Celery task naming the new ids. A broker outage is logged, not
    raised: the statements are stored and the sweep enqueues them again later.

    The sweep's own enqueues are rationed (module docstring): each statement or course once
    per `requeue_after` seconds (markers in the Redis at `redis_url`; without one, or with 0,
    every round), and nothing while `queue_cap` messages already wait in the broker."""

    def __init__(
        self,
        statements: StatementRepository,
        catalogue: CatalogueRepository,
        sweep_interval: float = 30.0,
        grace: float = 30.0,
        *,
        redis_url: str | None = None,
        requeue_after: float = 300.0,
        queue_cap: int = 1000,
    ) -> None:
        super().__init__(statements, catalogue, sweep_interval, grace)
        self.redis_url = redis_url
        self.requeue_after = requeue_after
        self.queue_cap = queue_cap

    async def submit(self, store: str, ids: list[str]) -> None:
        await self._enqueue_statements(store, ids)

    async def _enqueue_statements(self, store: str, ids: list[str]) -> bool:
        from workers.tasks import derive_statements

        try:
            await asyncio.wait_for(
                asyncio.to_thread(_enqueue, derive_statements, [store, ids]), timeout=2.0
            )
        except Exception as exc:
            log.warning("could not enqueue derivation of %d statements (%r)", len(ids), exc)
            return False
        return True

    async def _resubmit(self, store: str, ids: list[str]) -> None:
        if not await self._enqueue_statements(store, ids) and self.redis_url:
            # Not enqueued after all: let the next round try again.
            markers = [enqueued_marker(store, statement_id) for statement_id in ids]
            with contextlib.suppress(Exception):
                await self._on_broker(_forget_markers, markers)

    async def _room_for_more(self) -> bool:
        from workers.tasks import derive_statements

        try:
            waiting = await self._on_broker(_waiting_messages, derive_statements)
        except Exception as exc:  # the enqueues will tell whether the broker is there
            log.debug("could not count the messages waiting in the broker (%r)", exc)
            return True
        if waiting >= self.queue_cap:
            log.warning(
                "%d messages wait in the broker (workers are behind, or none runs: is "
                "`lrs worker` running?): the outbox sweep enqueues nothing more this round",
                waiting,
            )
            return False
        return True

    async def _due(self, kind: str, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if not keys or not self.redis_url or self.requeue_after <= 0:
            return keys
        markers = [_marker(kind, store, key) for store, key in keys]
        try:
            fresh = await self._on_broker(_set_markers, markers, self.requeue_after)
        except Exception as exc:  # no Redis: the enqueues fail too, and log it
            log.debug("could not mark the sweep's enqueues (%r)", exc)
            return keys
        return [key for key, new in zip(keys, fresh, strict=True) if new]

    async def _on_broker(self, function: Any, *args: Any) -> Any:
        return await asyncio.wait_for(
            asyncio.to_thread(function, self.redis_url, *args), timeout=5.0
        )

    async def submit_course(self, store: str, course_id: str) -> None:
        from workers.tasks import derive_course

        try:
            await asyncio.wait_for(
                asyncio.to_thread(_enqueue, derive_course, [store, course_id]), timeout=2.0
            )
        except Exception as exc:  # the course keeps its marker: the sweep enqueues it again
            log.warning("could not enqueue re-derivation of %s (%r)", course_id, exc)


MARKER_PREFIX = "lrs:outbox:enqueued:"


def _marker(kind: str, store: str, key: str) -> str:
    return f"{MARKER_PREFIX}{kind}:{store}:{key}"


def enqueued_marker(store: str, statement_id: str) -> str:
    """The Redis key that says the sweep enqueued this statement recently (it expires)."""
    return _marker("statement", store, statement_id)


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)


def _set_markers(url: str, markers: list[str], seconds: float) -> list[bool]:
    """Set each marker that is not set yet, expiring after `seconds`; True where it was not."""
    client = _redis(url)
    try:
        pipeline = client.pipeline(transaction=False)
        for marker in markers:
            pipeline.set(marker, b"1", nx=True, px=max(1, int(seconds * 1000)))
        return [bool(answer) for answer in pipeline.execute()]
    finally:
        client.close()


def _forget_markers(url: str, markers: list[str]) -> None:
    client = _redis(url)
    try:
        client.delete(*markers)
    finally:
        client.close()


def _waiting_messages(_: str | None, task: Any) -> int:
    """Messages in the broker queue the task goes to that no worker has taken yet."""
    from kombu.exceptions import ChannelError

    app = task.app
    queue = app.amqp.router.route({}, task.name)["queue"]
    options = {**(app.conf.broker_transport_options or {}), "max_retries": 0}
    with app.connection_for_read(transport_options=options) as connection:
        try:
            return int(queue(connection.default_channel).queue_declare(passive=True).message_count)
        except ChannelError:  # no such queue yet: nothing waits
            return 0


def _enqueue(task: Any, args: list[Any]) -> None:
    """Publish on a connection that does not retry: with the broker down the request goes on at
    once (the outbox sweep re-enqueues later) instead of holding a thread for seconds."""
    app = task.app
    options = {**(app.conf.broker_transport_options or {}), "max_retries": 0}
    with app.connection_for_write(transport_options=options) as connection:
        task.apply_async(args=args, retry=False, connection=connection)
