"""The Celery broker as the core sees it: task names, the app, and publishing that never makes a
caller wait.

The core names the tasks and sends them by name; `workers/` registers their implementations on
the same app (`workers.celery_app`). So nothing in `lrs` imports `workers`.

Publishing is fire-and-forget: `TaskPublisher.send` only appends to a bounded in-memory queue
that a background thread drains to the broker, merging consecutive derivation messages of one
store. With Redis down, requests go on at full speed: after a failed send the thread pauses
before it tries again (messages gather in the queue meanwhile, and go out together), and what
cannot be sent is dropped and found again by the outbox sweeps (the work is in the database,
design notes 1.3).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from lrs.observability import Occasional

log = logging.getLogger("lrs.broker")

DERIVE_STATEMENTS = "lrs.derive_statements"
DERIVE_COURSE = "lrs.derive_course"
RESUMMARIZE = "lrs.resummarize"
SWEEP_UNDERIVED = "lrs.sweep_underived"
FAN_OUT = "lrs.federation.fan_out"
DELIVER = "lrs.federation.deliver"
PULL = "lrs.federation.pull"
FEDERATION_SWEEP = "lrs.federation.sweep"

_MERGEABLE = (DERIVE_STATEMENTS, FAN_OUT)  # (store, ids, entries): one message for several
_MERGE_MAX = 1000  # statement ids per merged message
_QUEUE_MAX = 10_000
_COMPLAIN_EVERY = 30.0  # seconds between two warnings about an unreachable broker
# After a failed send the publisher leaves the broker alone for a while, the pause doubling from
# the first to the last figure while the broker stays away, and messages gather in the queue
# meanwhile (sent together, merged, once it answers). Retrying at once cost about 1 ms of CPU
# per attempt (a new connection, refused), one attempt per request under load: 972 attempts
# and 1.0 s of CPU in 1.6 s for 1,000 messages sent at 700/s, taken from the requests.
_RETRY_FIRST_SECONDS = 0.5
_RETRY_MAX_SECONDS = 5.0


def broker_url(redis_url: str | None) -> str:
    """Kombu names a Redis unix socket `redis+socket://`; redis-py (and LRS_REDIS_URL) `unix://`."""
    if not redis_url:
        return "memory://"
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


@functools.cache
def celery_app() -> Any:
    """The one Celery app of this process (API and workers alike)."""
    from celery import Celery

    from lrs.config import get_settings

    settings = get_settings()
    app = Celery("lrs", broker=broker_url(settings.redis_url))
    app.conf.update(
        # Every task goes to this LRS's queue, which its `lrs worker` consumes: several LRSs
        # can share a broker.
        task_default_queue=settings.celery_queue,
        task_acks_late=True,
        # A task whose worker died is redelivered, not dropped.
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Publishing fails fast when the broker is down (the outbox sweeps send again later).
        broker_transport_options={"socket_connect_timeout": 1, "socket_timeout": 2},
        task_publish_retry=False,
    )
    return app


def send_now(name: str, args: list[Any]) -> bool:
    """Publish one task message from the calling thread (workers, sweeps); False if the
    broker did not take it."""
    app = celery_app()
    options = {**(app.conf.broker_transport_options or {}), "max_retries": 0}
    try:
        with app.connection_for_write(transport_options=options) as connection:
            app.send_task(name, args=args, retry=False, connection=connection)
    except Exception as exc:  # the database says what is owed: a sweep sends it again
        log.warning("could not send %s to the broker (%r)", name, exc)
        return False
    return True


class DirectPublisher:
    """Sends each message at once from the calling thread (workers and their sweeps, which
    have no request to keep fast)."""

    def send(self, name: str, args: list[Any]) -> bool:
        return send_now(name, args)

    def close(self, timeout: float = 5.0) -> None:
        pass


class TaskPublisher:
    """Sends task messages from a background thread; `send` never blocks."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self._queue: queue.Queue[tuple[str, list[Any]] | None] = queue.Queue(_QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self._dropped = 0
        self._complaints = Occasional(_COMPLAIN_EVERY, clock)
        # The back-off after a failed send (see _RETRY_FIRST_SECONDS); `close` ends a pause.
        self._clock = clock
        self._wake = threading.Event()
        self._wait = wait or self._wake.wait
        self.pause = 0.0  # seconds the last failure set; 0 while sends succeed
        self._retry_at = 0.0

    def send(self, name: str, args: list[Any]) -> bool:
        """Queue a message; False (and dropped) when the queue is full: the broker is down or
        far behind, and the sweep will send the work again."""
        if self._thread is None:
            self.start()
        try:
            self._queue.put_nowait((name, args))
            return True
        except queue.Full:
            self._dropped += 1
            self._complain(f"{self._dropped} task messages dropped (broker unreachable?)")
            return False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="lrs-broker", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for at most `timeout` seconds), then stop."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        self._wake.clear()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued message was handed to the broker (or dropped); True if so
        within `timeout` (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.002)
        return not self._queue.unfinished_tasks

    def _drain(self) -> None:
        app = celery_app()
        options = {**(app.conf.broker_transport_options or {}), "max_retries": 0}
        connection: Any = None
        while True:
            first = self._queue.get()
            if first is not None:
                self._rest()
            items = [first]
            while first is not None and len(items) < 500:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = items[-1] is None or first is None
            messages = _merged([item for item in items if item is not None])
            try:
                if messages:
                    if connection is None:
                        connection = app.connection_for_write(transport_options=options)
                    for name, args in messages:
                        app.send_task(name, args=args, retry=False, connection=connection)
                    self.pause = 0.0
            except Exception as exc:
                self._complain(f"could not send {len(messages)} task messages ({exc!r})")
                if connection is not None:
                    connection.release()
                connection = None
                self.pause = min(max(self.pause * 2, _RETRY_FIRST_SECONDS), _RETRY_MAX_SECONDS)
                self._retry_at = self._clock() + self.pause
            finally:
                for _ in items:
                    self._queue.task_done()
            if stop:
                if connection is not None:
                    connection.release()
                return

    def _rest(self) -> None:
        """Wait out the pause a failed send set (at once when `close` is called)."""
        delay = self._retry_at - self._clock()
        if delay > 0 and not self._wake.is_set():
            self._wait(delay)

    def _complain(self, message: str) -> None:
        if self._complaints.due():
            log.warning("%s; the outbox sweep will send the work again", message)


def _merged(items: list[tuple[str, list[Any]]]) -> list[tuple[str, list[Any]]]:
    """Consecutive (store, ids, entries) messages of one task and store become one."""
    merged: list[tuple[str, list[Any]]] = []
    for name, args in items:
        if merged and name in _MERGEABLE:
            last_name, last = merged[-1]
            if (
                last_name == name
                and last[0] == args[0]
                and len(last[1]) + len(args[1]) <= _MERGE_MAX
            ):
                merged[-1] = (name, [args[0], last[1] + args[1], last[2] + args[2]])
                continue
        merged.append((name, list(args)))
    return merged
