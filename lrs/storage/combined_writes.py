"""Statement batches that arrive together are written together: one all-or-nothing write for
the batches of several requests (group commit, one level above the store's).

A batch written on its own pays fixed costs whatever its size: looks for existing ids, for
visible voiding statements and for statements referring to it, a stored key, its outbox
entries, and on the embedded store a job of the store's thread. Under load most POSTs carry
one statement, and these costs were most of the write (on the embedded store, two thirds of
a single statement's: 1,044 us of the store thread's time alone, 333 us written about 20 at
a time). So while IN_FLIGHT writes of a store are under way, the batches that arrive wait
for one to finish, then are written as one batch; a batch that finds fewer writes under way
is written at once, alone, so that nothing waits at low load.

All-or-nothing still holds per request. If a combined write fails (a conflicting statement,
a voiding statement that targets another, a lost lease, any error), nothing of it was
stored, and each request's batch is written again alone, in arrival order, with its own
outcome. Batches whose statement ids overlap are never combined: the same statement sent
twice at once is judged as two requests are. Each request is told its share of the write:
its own new statements, with the write's stored key and outbox token (one outbox entry
names every new statement of the write, so `on_commit` hands the whole write to derivation
and federation once, before any request of it is answered).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lrs.storage.statement_writes import Committed, Equivalence

log = logging.getLogger("lrs.storage")

# Writes one batch of a store all-or-nothing (StatementRepository.insert_batch).
Write = Callable[[str, list[dict[str, Any]], Equivalence], Awaitable[Committed]]

# A combined write takes at most this many statements (a larger batch is written alone):
# combining pays off for the many small batches, and a request must not wait behind a huge one.
MAX_STATEMENTS = 500
# Writes of one store under way at once; the batches that arrive beyond them are gathered.
# Enough to keep the store busy with batches of 100 (alternated runs of bench ingest, POST
# batches: 1,906-2,150 statements/s with 8, as without combining; 1,822-1,878 with 2), few
# enough that a stream of single POSTs (64 in flight in bench propagation) is written about
# 20 statements at a time.
IN_FLIGHT = 8


@dataclass
class _Request:
    statements: list[dict[str, Any]]
    equivalent: Equivalence
    ids: set[str]
    done: asyncio.Future[Committed] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CombinedWrites:
    def __init__(
        self,
        write: Write,
        on_commit: Callable[[str, Committed], None],
        max_statements: int = MAX_STATEMENTS,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self._write = write
        self._on_commit = on_commit  # once per write, before its requests are answered
        self.max_statements = max_statements
        self.in_flight = in_flight
        self._queues: dict[str, list[_Request]] = {}
        self._running: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(
        self, store: str, statements: list[dict[str, Any]], equivalent: Equivalence
    ) -> Committed:
        """Write one request's batch (with others that arrive meanwhile); returns its share."""
        request = _Request(statements, equivalent, {s["id"] for s in statements})
        self._queues.setdefault(store, []).append(request)
        self._start(store)
        # A request that goes away meanwhile leaves its batch queued: it is written all the
        # same (as a batch whose client went away mid-write always could be).
        return await request.done

    def _start(self, store: str) -> None:
        if self._queues.get(store) and self._running.get(store, 0) < self.in_flight:
            self._running[store] = self._running.get(store, 0) + 1
            # In a context of its own: not in the urgent lane, whichever request started it.
            task = asyncio.get_running_loop().create_task(
                self._drain(store), context=contextvars.Context()
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self, store: str) -> None:
        try:
            while group := self._take(store):
                try:
                    await self._write_group(store, group)
                except BaseException:  # cancelled (shut down): its requests hear of it
                    for request in group:
                        request.done.cancel()
                    raise
        finally:
            self._running[store] -= 1
            self._start(store)  # anything queued behind a failure

    def _take(self, store: str) -> list[_Request]:
        """The queued requests to write next: the oldest, and those after it that fit (up to
        `max_statements`, no shared ids); the others stay queued, in order."""
        queue = self._queues.get(store) or []
        group: list[_Request] = []
        ids: set[str] = set()
        size = 0
        kept: list[_Request] = []
        for request in queue:
            fits = not group or (
                size + len(request.statements) <= self.max_statements and not ids & request.ids
            )
            if fits:
                group.append(request)
                ids |= request.ids
                size += len(request.statements)
            else:
                kept.append(request)
        self._queues[store] = kept
        return group

    async def _write_group(self, store: str, group: list[_Request]) -> None:
        if len(group) > 1:
            try:
                committed = await self._write(store, _merged(group), _by_request(group))
            except Exception:
                pass  # nothing of it stored: each request's batch again, alone, below
            else:
                self._committed(store, committed)
                for request in group:
                    _settle(request, share=_share(committed, request))
                return
        for request in group:
            try:
                committed = await self._write(store, request.statements, request.equivalent)
            except Exception as exc:
                _settle(request, error=exc)
            else:
                self._committed(store, committed)
                _settle(request, share=committed)

    def _committed(self, store: str, committed: Committed) -> None:
        try:
            self._on_commit(store, committed)
        except Exception:  # stored all the same, and its requests must still hear so
            log.exception("could not hand %d stored statements over", len(committed.fresh))


def _merged(group: list[_Request]) -> list[dict[str, Any]]:
    return [statement for request in group for statement in request.statements]


def _by_request(group: list[_Request]) -> Equivalence:
    """Each statement judged by the equivalence of the request that sent it (its version)."""
    judge = {statement_id: r.equivalent for r in group for statement_id in r.ids}

    def equivalent(existing: dict[str, Any], candidate: dict[str, Any]) -> bool:
        return judge[candidate["id"]](existing, candidate)

    return equivalent


def _share(committed: Committed, request: _Request) -> Committed:
    fresh = [s for s in committed.fresh if s["id"] in request.ids]
    return Committed(
        fresh, committed.stored_key, committed.token if fresh else None, committed.forward
    )


def _settle(
    request: _Request, *, share: Committed | None = None, error: Exception | None = None
) -> None:
    if request.done.done():
        return
    if error is not None:
        request.done.set_exception(error)
    else:
        request.done.set_result(share)
