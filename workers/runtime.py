"""One event loop and one set of services per worker process.

Celery tasks are synchronous; the storage layer is async. Each worker process runs a private
event loop on a background thread and submits coroutines to it, so the MongoDB client and its
connection pool live as long as the process (created after fork, never shared across it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from lrs.config import get_settings
from lrs.services import Services, build_services

T = TypeVar("T")

_lock = threading.Lock()
_runtime: _Runtime | None = None


class _Runtime:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="lrs-worker-loop", daemon=True
        )
        self.thread.start()
        self.services: Services = build_services(get_settings())
        self.run(self.services.start(background=False))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


def runtime() -> _Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = _Runtime()
        return _runtime


def run(coroutine_factory: Any) -> Any:
    """Run `coroutine_factory(services)` on the process's loop and return its result."""
    current = runtime()
    return current.run(coroutine_factory(current.services))
