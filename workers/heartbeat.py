"""Worker liveness for `GET /ready`: each running worker records a heartbeat in the database.

The database rather than Celery's own events: the API checks readiness without a broker round
trip, and a heartbeat proves the worker can reach the store, which its tasks need.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from lrs.storage import heartbeats
from workers import runtime

INTERVAL_SECONDS = 15.0  # well inside the API's 60 s staleness limit

log = logging.getLogger("lrs.worker.heartbeat")


def beat(name: str) -> None:
    """Record one heartbeat for the worker `name` now."""

    async def record(services: Any) -> None:
        await heartbeats.record(services.database, name)

    runtime.run(record)


def start(name: str, interval: float = INTERVAL_SECONDS) -> threading.Event:
    """Beat now and then every `interval` seconds on a daemon thread; set the returned event to
    stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                beat(name)
            except Exception:  # a store outage must not kill the worker; /ready shows it
                log.exception("heartbeat failed")
            stop.wait(interval)

    threading.Thread(target=loop, name="lrs-heartbeat", daemon=True).start()
    return stop
