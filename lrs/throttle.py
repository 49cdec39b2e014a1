"""Throttling of failed authentication attempts, per credential key and per client address.

Failures are counted in moving windows with the `limits` library: in Redis when LRS_REDIS_URL
is set (so every API process shares the counts), in the process's memory otherwise. Once a
limit is reached, requests for that key, or from that address, are answered 429 with a
Retry-After until the window has room again, without their secret being checked: a guesser
learns nothing more, and spends none of the server's hashing time. A legitimate client whose
key is being attacked is locked out too for that while, the price of not leaking a verification
oracle; the per-key limit is therefore more generous than a guesser needs to be slowed.

If the counting store fails (Redis down), authentication goes on unthrottled rather than
refusing everybody.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from lrs.observability import Occasional

log = logging.getLogger("lrs.auth")


def redis_storage_uri(redis_url: str) -> str:
    """The `limits` spelling of a redis-py URL (redis://, rediss://, unix://)."""
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url[len("unix://") :]
    return "async+" + redis_url


class FailureThrottle:
    def __init__(
        self,
        per_key: str = "20/minute",
        per_address: str = "60/minute",
        redis_url: str | None = None,
        namespace: str = "lrs",
    ) -> None:
        # Parsed now, so that a bad setting stops start-up with a clear message.
        self.per_key: RateLimitItem = parse(per_key)
        self.per_address: RateLimitItem = parse(per_address)
        self.redis_url = redis_url
        self.namespace = namespace
        self._limiter: MovingWindowRateLimiter | None = None
        self._storage: Storage | None = None

    def _open(self) -> MovingWindowRateLimiter:
        # Created on first use, inside the event loop that serves requests.
        if self._limiter is None:
            if self.redis_url:
                self._storage = RedisStorage(
                    redis_storage_uri(self.redis_url),
                    implementation="redispy",
                    key_prefix=f"LIMITS:{self.namespace}",
                    socket_connect_timeout=1,
                    socket_timeout=1,
                )
            else:
                self._storage = MemoryStorage()
            self._limiter = MovingWindowRateLimiter(self._storage)
        return self._limiter

    def _limits(self, key: str | None, address: str | None) -> list[tuple[RateLimitItem, str]]:
        checked = []
        if key is not None:
            checked.append((self.per_key, f"auth-key:{key}"))
        if address:
            checked.append((self.per_address, f"auth-address:{address}"))
        return checked

    async def retry_after(self, key: str | None, address: str | None) -> int | None:
        """Seconds until an attempt for `key` from `address` may be checked again, or None if
        it may be checked now."""
        try:
            limiter = self._open()
            wait = 0.0
            for item, name in self._limits(key, address):
                if not await limiter.test(item, name):
                    stats = await limiter.get_window_stats(item, name)
                    wait = max(wait, stats.reset_time - time.time())
            return max(1, math.ceil(wait)) if wait > 0 else None
        except Exception as exc:  # the counting store is down: do not lock everybody out
            _unavailable(exc)
            return None

    async def failed(self, key: str | None, address: str | None) -> None:
        """Count a failed attempt."""
        try:
            limiter = self._open()
            for item, name in self._limits(key, address):
                await limiter.hit(item, name)
        except Exception as exc:
            _unavailable(exc)

    async def reset(self) -> None:
        """Forget every count (tests, and an operator who lifts a lock-out)."""
        if self._storage is not None:
            await self._storage.reset()


_unavailable_warning = Occasional(60.0)  # one line a minute, not one per request


def _unavailable(exc: Any) -> None:
    if _unavailable_warning.due():
        log.warning("authentication throttling unavailable: %s: %s", type(exc).__name__, exc)
