"""Getting stored statements to the derivation: the outbox (design notes section 1).

A committed statement batch leaves a `derive` entry in the outbox (lrs.storage.outbox). Right
after the write the API hands it to a dispatcher, which never waits on I/O in the request path:
in-process, onto a queue a background task drains; with Celery, onto the publisher's queue
(lrs.broker). The deriver deletes the entry once the statements are derived. A periodic sweep
hands over every entry still there after a grace period, so a batch stored while Redis or
every worker was down is derived once they are back, and no request ever fails because of them.

With Celery, an entry still there may simply be waiting in the broker for a worker. So that the
sweep does not add another copy at every round while no worker consumes (the queue would grow
without bound), it sends an entry (or course) again only once per `LRS_OUTBOX_REQUEUE_AFTER`
seconds, remembered by an expiring marker key in Redis, and sends nothing while the broker's
queue already holds `LRS_OUTBOX_QUEUE_CAP` messages no worker took.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from lrs import broker
from lrs.periodic import Periodic
from lrs.storage.database import urgent_storage_calls
from lrs.storage.outbox import Outbox, Owed
from lrs.storage.progress import CatalogueRepository

log = logging.getLogger("lrs.dispatch")

_SWEEP_PAGE = 1000  # outbox entries read per sweep page
_RESUMMARY_DELAY = 1.0  # seconds a grown discovered module waits for more growth
_SWEEP_MAX_PAGES = 100  # per round: a backlog beyond this waits for the next round


class Deriving(Protocol):
    async def derive_statements(self, store: str, ids: list[str], entries: list[str]) -> int: ...

    async def derive_course(self, store: str, course_id: str) -> int: ...

    async def resummarize(self, store: str, course_id: str, module_id: str) -> int: ...


class Dispatcher:
    def __init__(
        self,
        outbox: Outbox,
        catalogue: CatalogueRepository,
        sweep_interval: float,
        grace: float,
        recover: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.outbox = outbox
        self.catalogue = catalogue
        self.sweep_interval = sweep_interval
        self.grace = grace
        # Finishes statement batches whose writer died (MongoDB), so that their outbox entries
        # exist before the sweep looks for them.
        self.recover = recover
        self._soon: set[tuple[str, str, str]] = set()  # resummaries scheduled
        self._sweeper = Periodic(self.sweep, sweep_interval, log, "outbox sweep")

    def submit(self, owed: Owed) -> None:
        """Hand statements over for derivation, without waiting."""
        raise NotImplementedError

    async def submit_course(self, store: str, course_id: str) -> None:
        """Re-derive a course after its definition changed."""
        raise NotImplementedError

    def submit_resummary(self, store: str, course_id: str, module_id: str) -> None:
        """Summarize a grown discovered module's records again."""
        raise NotImplementedError

    def grown(self, store: str, modules: list[tuple[str, str]]) -> None:
        """Discovered modules grew (the deriver says so): their other learners' records are
        summarized again, at most once per `_RESUMMARY_DELAY` per module, however fast the
        module grows (its outbox entry keeps this durable meanwhile)."""
        loop = asyncio.get_running_loop()
        for course_id, module_id in modules:
            key = (store, course_id, module_id)
            if key not in self._soon:
                self._soon.add(key)
                loop.call_later(_RESUMMARY_DELAY, self._resummary_due, key)

    def _resummary_due(self, key: tuple[str, str, str]) -> None:
        self._soon.discard(key)
        self.submit_resummary(*key)

    def after_store(self, store: str, ids: list[str], token: str) -> None:
        """A batch committed: derive it (its outbox entry is `<token>:derive`)."""
        self.submit(Owed(store, list(ids), [f"{token}:derive"]))

    async def sweep(self, grace: float | None = None) -> int:
        """Hand over every outbox entry still there `grace` seconds after its batch was stored
        (those handed over recently excepted, see `_due`); returns the statements handed over."""
        if self.recover is not None:
            await self.recover()
        older_than = int((time.time() - (self.grace if grace is None else grace)) * 1e6)
        total = 0
        if not await self._room_for_more():
            return total
        courses = await self.catalogue.pending(older_than)
        for store, course_id in await self._due("course", courses):
            await self.submit_course(store, course_id)
        for entry in await self.outbox.pending("resummarize", older_than=older_than):
            key = (entry["store"], entry["course"], entry["module"])
            if key not in self._soon:
                self.submit_resummary(*key)
        after: tuple[int, str] | None = None
        for _ in range(_SWEEP_MAX_PAGES):
            entries = await self.outbox.pending(
                "derive", older_than=older_than, after=after, limit=_SWEEP_PAGE
            )
            if not entries:
                return total
            due = {
                key
                for _, key in await self._due("entry", [(e["store"], e["_id"]) for e in entries])
            }
            for entry in entries:
                if entry["_id"] in due:
                    self.submit(
                        Owed(entry["store"], list(entry["ids"]), [entry["_id"]], swept=True)
                    )
                    total += len(entry["ids"])
            # Page on past entries handed over recently (still waiting in the broker), so older
            # ones never hide newer ones that were never handed over.
            after = (entries[-1]["stored_key"], entries[-1]["_id"])
            if not await self._sweep_makes_progress(total):
                return total
        return total

    async def _room_for_more(self) -> bool:
        return True

    async def _due(self, kind: str, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (store, key) pairs of a sweep page to hand over this round."""
        return keys

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
        outbox: Outbox,
        catalogue: CatalogueRepository,
        deriver: Deriving,
        sweep_interval: float = 30.0,
        recover: Callable[[], Awaitable[int]] | None = None,
        grace: float = 0.0,
    ) -> None:
        super().__init__(outbox, catalogue, sweep_interval, grace=grace, recover=recover)
        self.deriver = deriver
        self._queue: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        # What is queued or being derived: the sweep leaves it alone (under a backlog it would
        # otherwise queue every waiting batch a second time), and `idle` waits for it.
        self._in_flight: collections.Counter[tuple[str, str]] = collections.Counter()

    def submit(self, owed: Owed) -> None:
        self._in_flight.update(("entry", e) for e in owed.entries)
        self._in_flight[("statements", owed.store)] += 1
        self._queue.put_nowait(("statements", owed.store, owed))

    async def submit_course(self, store: str, course_id: str) -> None:
        self._in_flight[("course", f"{store}\0{course_id}")] += 1
        self._queue.put_nowait(("course", store, course_id))

    def submit_resummary(self, store: str, course_id: str, module_id: str) -> None:
        self._in_flight[("resummary", f"{store}\0{course_id}\0{module_id}")] += 1
        self._queue.put_nowait(("resummary", store, (course_id, module_id)))

    async def _due(self, kind: str, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if kind == "course":
            return [(s, c) for s, c in keys if ("course", f"{s}\0{c}") not in self._in_flight]
        return [(s, k) for s, k in keys if ("entry", k) not in self._in_flight]

    def _done(self, items: list[tuple[str, str, Any]]) -> None:
        for kind, store, payload in items:
            if kind == "course":
                keys = [("course", f"{store}\0{payload}")]
            elif kind == "resummary":
                keys = [("resummary", f"{store}\0{payload[0]}\0{payload[1]}")]
            else:
                keys = [("entry", e) for e in payload.entries] + [("statements", store)]
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
        last_round_ended = 0.0
        while True:
            items = [await self._queue.get()]
            kind, _, payload = items[0]
            swept = kind == "statements" and payload.swept
            if not swept and time.monotonic() - last_round_ended < _BUSY_WINDOW:
                # Under a stream of requests each one's statements would make a round of their
                # own: a round's fixed cost (catalogue, sequence, outbox) then dominates. A short
                # wait lets the next requests join it (a third less derivation CPU per
                # statement under single POSTs); alone, a statement is derived at once. What a
                # sweep handed over waits for nothing: a sweep hands over all the outbox holds
                # at once (the derivation process is fed only so), so nothing would join, and
                # the wait only lengthened each of its cycles.
                await asyncio.sleep(_GATHER_SECONDS)
            # Under write load many small submissions queue up: derive them together, so a
            # learner-module pair touched by several requests is folded in one write.
            while not self._queue.empty() and _size(items) < _COALESCE_MAX:
                items.append(self._queue.get_nowait())
            for kind, store, payload in _coalesce(items):
                try:
                    if kind == "course":
                        await self.deriver.derive_course(store, payload)
                    elif kind == "resummary":
                        await self.deriver.resummarize(store, *payload)
                    else:
                        await self.deriver.derive_statements(store, payload.ids, payload.entries)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the outbox entries stay: the sweep retries them
                    log.exception("derivation failed (%s in %s)", kind, store)
            self._done(items)
            last_round_ended = time.monotonic()

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted so far is derived (tests, benchmarks, shutdown)."""
        deadline = time.monotonic() + timeout
        while (self._in_flight or self._soon) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await self.idle(timeout=10)
        await super().close()
        if self._consumer:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer


class ElsewhereDispatcher(Dispatcher):
    """An API process beside a derivation process (`LRS_DERIVATION=process`): nothing to hand
    over and nothing to sweep. The batch's outbox entry, written with it, is the hand-over: the
    derivation process finds it (lrs.derivation_process), so the API's core is left to
    requests."""

    def submit(self, owed: Owed) -> None:
        """The outbox entry says it all."""

    async def submit_course(self, store: str, course_id: str) -> None:
        """The course's pending marker says it all."""

    def submit_resummary(self, store: str, course_id: str, module_id: str) -> None:
        """Its outbox entry says it all (only a deriver asks for one)."""

    async def start(self) -> None:
        """No sweep: the derivation process looks at the outbox all the time."""

    async def close(self) -> None:
        """Nothing started."""


# Statements merged into one derivation round. A round folds each learner-module pair once
# however many of its statements it holds, so rounds that grow while derivation is behind are
# what lets it catch up; a large round runs as several short units (lrs.progress.deriver), so
# requests are not held up behind it.
_COALESCE_MAX = 5000
# A submission that arrives within _BUSY_WINDOW of the last round's end waits _GATHER_SECONDS
# for others to join its round. At 1,000 single POSTs/s offered (`bench propagation --mode
# inprocess`, alternated runs): 10 ms took 946-966 statements/s, ack -> SSE p99 164-177 ms;
# 20 ms 978-994, p99 211-218; 40 ms 991-992, p99 250-253 (the target is 250). Rounds a sweep
# feeds do not wait: in the derivation process (`--mode process`, 1,000/s) the wait had made
# ack -> SSE p50 143-144 ms and p99 341-473; without it 58-63 and 161-187.
_BUSY_WINDOW = 0.05
_GATHER_SECONDS = 0.02


def _size(items: list[tuple[str, str, Any]]) -> int:
    return sum(len(payload.ids) if kind == "statements" else 1 for kind, _, payload in items)


def _coalesce(items: list[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    """Merge statement submissions per store (in order of first appearance); courses stay."""
    merged: list[tuple[str, str, Any]] = []
    statements: dict[str, Owed] = {}
    for kind, store, payload in items:
        if kind != "statements":
            merged.append((kind, store, payload))
        elif store in statements:
            statements[store].ids.extend(payload.ids)
            statements[store].entries.extend(payload.entries)
        else:
            statements[store] = Owed(store, list(payload.ids), list(payload.entries))
            merged.append((kind, store, statements[store]))
    return merged


class CeleryDispatcher(Dispatcher):
    """Production: send a Celery task naming the batch (never waiting for the broker: see
    lrs.broker). A broker outage loses nothing: the outbox entries stay for the sweep.

    The sweep's own sends are rationed (module docstring): each entry or course once per
    `requeue_after` seconds (markers in the Redis at `redis_url`; without one, or with 0,
    every round), and nothing while `queue_cap` messages already wait in the broker."""

    def __init__(
        self,
        outbox: Outbox,
        catalogue: CatalogueRepository,
        sweep_interval: float = 30.0,
        grace: float = 30.0,
        *,
        redis_url: str | None = None,
        requeue_after: float = 300.0,
        queue_cap: int = 1000,
        publisher: broker.TaskPublisher | broker.DirectPublisher | None = None,
        recover: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        super().__init__(outbox, catalogue, sweep_interval, grace, recover)
        self.redis_url = redis_url
        self.requeue_after = requeue_after
        self.queue_cap = queue_cap
        self.publisher = publisher or broker.TaskPublisher()

    def submit(self, owed: Owed) -> None:
        self.publisher.send(broker.DERIVE_STATEMENTS, [owed.store, owed.ids, owed.entries])

    async def submit_course(self, store: str, course_id: str) -> None:
        # The course keeps its marker until derived: if this is lost, the sweep sends it again.
        self.publisher.send(broker.DERIVE_COURSE, [store, course_id])

    def submit_resummary(self, store: str, course_id: str, module_id: str) -> None:
        self.publisher.send(broker.RESUMMARIZE, [store, course_id, module_id])

    async def _room_for_more(self) -> bool:
        try:
            waiting = await self._on_broker(_waiting_messages)
        except Exception as exc:  # the sends will tell whether the broker is there
            log.debug("could not count the messages waiting in the broker (%r)", exc)
            return True
        if waiting >= self.queue_cap:
            log.warning(
                "%d messages wait in the broker (workers are behind, or none runs: is "
                "`lrs worker` running?): the outbox sweep sends nothing more this round",
                waiting,
            )
            return False
        return True

    async def _due(self, kind: str, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if not keys or not self.redis_url or self.requeue_after <= 0:
            return keys
        markers = [marker(kind, store, key) for store, key in keys]
        try:
            fresh = await self._on_broker(_set_markers, markers, self.requeue_after)
        except Exception as exc:  # no Redis: the sends fail too, and say so
            log.debug("could not mark the sweep's sends (%r)", exc)
            return keys
        return [key for key, new in zip(keys, fresh, strict=True) if new]

    async def _on_broker(self, function: Any, *args: Any) -> Any:
        return await asyncio.wait_for(
            asyncio.to_thread(function, self.redis_url, *args), timeout=5.0
        )

    async def close(self) -> None:
        await super().close()
        await asyncio.to_thread(self.publisher.close)


MARKER_PREFIX = "lrs:outbox:enqueued:"


def marker(kind: str, store: str, key: str) -> str:
    """The Redis key that says the sweep sent this entry (or course) recently (it expires)."""
    return f"{MARKER_PREFIX}{kind}:{store}:{key}"


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)


def _set_markers(url: str, markers: list[str], seconds: float) -> list[bool]:
    """Set each marker that is not set yet, expiring after `seconds`; True where it was not."""
    client = _redis(url)
    try:
        pipeline = client.pipeline(transaction=False)
        for name in markers:
            pipeline.set(name, b"1", nx=True, px=max(1, int(seconds * 1000)))
        return [bool(answer) for answer in pipeline.execute()]
    finally:
        client.close()


def _waiting_messages(_: str | None) -> int:
    """Messages in the broker queue the derivation tasks go to that no worker has taken yet."""
    from kombu.exceptions import ChannelError

    app = broker.celery_app()
    queue = app.amqp.router.route({}, broker.DERIVE_STATEMENTS)["queue"]
    options = {**(app.conf.broker_transport_options or {}), "max_retries": 0}
    with app.connection_for_read(transport_options=options) as connection:
        try:
            return int(queue(connection.default_channel).queue_declare(passive=True).message_count)
        except ChannelError:  # no such queue yet: nothing waits
            return 0
