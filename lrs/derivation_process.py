"""The derivation process (`LRS_DERIVATION=process`): derivation on a core of its own.

In the embedded mode the API process used to derive what it stored, on the same store thread
and under the same GIL as the requests: about two thirds of that thread's time under write
load went to progress. Here the API processes only store (each batch with its outbox entry, in
one transaction) and this process derives: it looks at the outbox every `POLL_SECONDS`, hands
every entry it finds to the same in-process dispatcher and deriver the API used, and deletes
the entries once their statements are derived. Nothing is lost if it dies: the entries stay,
and the process that replaces it (`lrs serve` restarts it) finds them.

Live events reach SSE clients through the store: every record written takes the next number of
the store's change sequence, which the API processes poll (lrs.progress.live).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time

from lrs.config import Settings
from lrs.progress.dispatch import InProcessDispatcher
from lrs.services import Services, build_services
from lrs.storage import heartbeats

log = logging.getLogger("lrs.derivation")

# How often the outbox is looked at when the last look found nothing. Under load every look
# finds work, and the rounds grow with the backlog (up to lrs.progress.dispatch._COALESCE_MAX).
POLL_SECONDS = 0.01
REST_AFTER_SECONDS = 1.0
REST_FACTOR = 5
# Without a change in the store (a commit by another process) the outbox is looked at only
# this often: what a failed round left is retried then.
LOOK_ANYWAY_SECONDS = 1.0
# Its heartbeat in the store, for `GET /ready` (as Celery workers', workers.heartbeat).
HEARTBEAT_PREFIX = "derivation:"
HEARTBEAT_SECONDS = 15.0
# The most page cache its embedded store keeps per connection (LRS_EMBEDDED_CACHE_MIB, when
# smaller, wins): its rounds read statements and records once each. Against 64 MiB: the
# discovered scenario's drain the same (30-31 s) with the process's peak about 75 MiB lower,
# the ingest server's peak 70 MiB lower; POST batches about 3% fewer statements/s on a
# 20,000-statement store (alternated runs, within the machine's noise; 32 MiB the same).
DERIVATION_CACHE_MIB = 16


def deriving_settings(settings: Settings) -> Settings:
    """The settings of the process that derives: it derives itself, with no grace period (what
    is in the outbox is its to derive), and needs no live listener of its own.

    Its commits need not reach the disk before they return (embedded store: synchronous
    NORMAL): it acknowledges nothing to anyone, and a round lost to a power cut loses its
    outbox entries' removal with it, so the round is derived again, as after a crash of the
    process. Syncing each of its many small commits made the discovered scenario's drain
    take 65-68 s instead of 44-45 s. Its page cache is at most `DERIVATION_CACHE_MIB`."""
    return settings.model_copy(
        update={
            "derivation": "inprocess",
            "workers": 1,
            "embedded_synchronous": "normal",
            "embedded_cache_mib": min(settings.embedded_cache_mib, DERIVATION_CACHE_MIB),
        }
    )


async def derive_forever(services: Services, poll: float = POLL_SECONDS) -> None:
    """Derive what the outbox owes, as soon as it appears, until cancelled."""
    dispatcher = services.dispatcher
    if not isinstance(dispatcher, InProcessDispatcher):
        raise TypeError("build the derivation process's services from deriving_settings()")
    quiet_since: int | None = None  # the change mark when the last look found nothing
    next_look = 0.0
    last_work = 0.0
    await dispatcher.start()
    # On a task of its own: a look at the outbox under a backlog lasts as long as the backlog.
    beating = asyncio.create_task(_beat_forever(services))
    try:
        while True:
            found = 0
            try:
                # Read before the look: a write committed during it moves the mark again.
                mark = await services.database.change_mark()
                now = time.monotonic()
                if mark is None or mark != quiet_since or now >= next_look:
                    found = await dispatcher.sweep(grace=0.0)
                    quiet_since = mark if not found else None
                    # A round that failed left its entries: looked at again within a second.
                    next_look = now + LOOK_ANYWAY_SECONDS
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is busy or away: the next look tries again
                log.exception("could not derive what the outbox owes")
                quiet_since = None
            if found:
                last_work = time.monotonic()
            else:
                # Every look costs a little CPU: at rest (nothing for a second), look less often.
                resting = time.monotonic() - last_work > REST_AFTER_SECONDS
                await asyncio.sleep(poll * REST_FACTOR if resting else poll)
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        await dispatcher.close()


async def _beat_forever(services: Services) -> None:
    name = f"{HEARTBEAT_PREFIX}{socket.gethostname()}:{os.getpid()}"
    while True:
        try:
            await heartbeats.record(services.database, name)
        except asyncio.CancelledError:
            raise
        except Exception:  # the store is away: /ready will say so
            log.exception("could not record the derivation process's heartbeat")
        await asyncio.sleep(HEARTBEAT_SECONDS)


async def _main(settings: Settings) -> None:
    services = build_services(deriving_settings(settings))
    services.deriver.brief_writes = True
    await services.start(background=False)
    services.start_returning_memory()
    task = asyncio.create_task(derive_forever(services))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    log.info("deriving progress from the outbox (pid %d)", os.getpid())
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await services.close()


def run(settings: Settings) -> None:
    """The derivation process's body (`lrs serve` forks it; `lrs derive` runs it here)."""
    asyncio.run(_main(settings))
