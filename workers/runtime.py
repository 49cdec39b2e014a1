"""One event loop and one set of services per worker process.

Celery tasks are synchronous; the storage layer is async. Each worker process runs a private
event loop on a background thread and submits coroutines to it, so the MongoDB client and its
connection pool live as long as the process (created after fork, never shared across it).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from lrs.config import get_settings
from lrs.services import Services, build_services

T = TypeVar("T")

_lock = threading.Lock()
_runtime: _Runtime | None = None
# None: services from the environment (a worker process). Tests and the benchmark run a worker
# thread inside a process that already holds the store, and pass a factory that shares it.
_factory: Callable[[], Services] | None = None


class _Runtime:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="lrs-worker-loop", daemon=True
        )
        self.thread.start()
        self.services: Services = _factory() if _factory else build_services(get_settings())
        self.run(self.services.start(background=False))
        self.run(self._return_memory())

    async def _return_memory(self) -> None:
        # A worker lives long and derives in bursts: what a burst freed goes back to the
        # system (lrs.memory), as in the API and derivation processes.
        self.services.start_returning_memory()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        async def close_services() -> None:
            await self.services.close()
            await self.services.bus.close()  # started without background: close() skips it

        try:
            self.run(close_services())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


def configure(factory: Callable[[], Services] | None) -> None:
    """Build the worker services with `factory` from now on (None: from the environment),
    closing the current ones. For a worker thread embedded in a process that owns the store."""
    global _factory
    shutdown()
    _factory = factory


def shutdown() -> None:
    """Close this process's services and event loop; the next task starts afresh."""
    global _runtime
    with _lock:
        current, _runtime = _runtime, None
    if current is not None:
        current.close()


def runtime() -> _Runtime:
    global _runtime
    with _lock:
        # A forked pool child inherits the parent's runtime but not its loop thread.
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = _Runtime()
        return _runtime


def run(coroutine_factory: Any) -> Any:
    """Run `coroutine_factory(services)` on the process's loop and return its result."""
    current = runtime()
    return current.run(coroutine_factory(current.services))
