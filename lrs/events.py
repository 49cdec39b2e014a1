"""Live progress events: Redis pub/sub across processes, or an in-process bus when the service
runs embedded. Publishers send a change once; every API process fans it out to its own SSE
clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from lrs.observability import Occasional
from lrs.xapi.jsontext import compact_json_bytes

log = logging.getLogger("lrs.events")

CHANNEL_PREFIX = "lrs:progress:"
LISTENER_RETRY_SECONDS = 1.0
LISTENER_WARN_EVERY = 60.0


def channel(store: str) -> str:
    return CHANNEL_PREFIX + store


class EventBus:
    """Subscribers get an asyncio.Queue of (store, event) for every published event."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self._ended = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def publish(self, store: str, event: dict[str, Any]) -> None:
        self.deliver(store, event)

    async def publish_many(self, store: str, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.deliver(store, event)

    def deliver(self, store: str, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() < 10_000:  # a stuck client must not grow memory without bound
                queue.put_nowait((store, event))

    @contextlib.asynccontextmanager
    async def subscribe(
        self, store: str | None = None
    ) -> AsyncIterator[asyncio.Queue[tuple[str, dict[str, Any]]]]:
        """A queue of every event published from now on (`store`: the one the subscriber
        reads; a bus that polls the store for changes needs to know)."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        if self._ended:  # subscribed while the service stops: end at once, after any catch-up
            queue.put_nowait(None)  # type: ignore[arg-type]
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def start(self) -> None:
        self._ended = False

    def end_streams(self) -> None:
        """Tell every subscriber, and any that subscribes from now on, that the service is
        stopping (None), so open SSE responses end instead of being cancelled mid-stream at
        shutdown. Idempotent. Called when the server starts shutting down (`lrs.server`): the
        server waits for open responses to end before the application's own shutdown."""
        if self._ended:
            return
        self._ended = True
        for queue in list(self._subscribers):
            queue.put_nowait(None)  # type: ignore[arg-type]

    async def close(self) -> None:
        self.end_streams()


class RedisEventBus(EventBus):
    """Publishes to Redis; one listener task per process feeds the local subscribers."""

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis.asyncio as redis_async

        self._redis = redis_async.Redis.from_url(url)
        self._listener: asyncio.Task[None] | None = None

    async def publish(self, store: str, event: dict[str, Any]) -> None:
        await self._redis.publish(channel(store), compact_json_bytes(event))

    async def publish_many(self, store: str, events: list[dict[str, Any]]) -> None:
        # One round trip for a derivation round's events, in order.
        async with self._redis.pipeline(transaction=False) as pipeline:
            for event in events:
                pipeline.publish(channel(store), compact_json_bytes(event))
            await pipeline.execute()

    async def start(self) -> None:
        await super().start()
        self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        failures = 0  # attempts in a row that failed
        # Retried once a second while Redis is away: said at the first failure, then at most
        # every LISTENER_WARN_EVERY seconds (it was a warning a second, all outage long).
        lost = Occasional(LISTENER_WARN_EVERY)
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                if failures:
                    log.warning("progress event listener is back on Redis")
                    failures = 0
                    lost.reset()
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    store = message["channel"].decode()[len(CHANNEL_PREFIX) :]
                    self.deliver(store, orjson.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarts must not end live updates for good
                failures += 1
                if lost.due():
                    log.warning(
                        "progress event listener lost Redis (%s; %d attempts so far); retrying"
                        " every %g s",
                        exc,
                        failures,
                        LISTENER_RETRY_SECONDS,
                    )
                await asyncio.sleep(LISTENER_RETRY_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # its connection, if it had one

    async def close(self) -> None:
        self.end_streams()
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._redis.aclose()
