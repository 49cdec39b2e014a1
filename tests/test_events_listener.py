"""The Redis event listener (lrs.events.RedisEventBus) while Redis is away: it retries, closes
each failed subscription, and says so once (then at most every LISTENER_WARN_EVERY seconds)
instead of once a second all outage long; it says when it is back. A fake Redis client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lrs import events


class FakePubSub:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis

    async def psubscribe(self, pattern: str) -> None:
        self.redis.attempts += 1
        if self.redis.down:
            raise ConnectionError("Connection refused")

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        self.redis.listening.set()
        await asyncio.Event().wait()  # no message ever comes
        yield {}

    async def aclose(self) -> None:
        self.redis.closed += 1


class FakeRedis:
    def __init__(self) -> None:
        self.down = True
        self.attempts = 0
        self.closed = 0
        self.listening = asyncio.Event()

    def pubsub(self) -> FakePubSub:
        return FakePubSub(self)

    async def aclose(self) -> None:
        pass


async def until(condition: Any) -> None:
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def said(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records if r.name == "lrs.events")


@pytest.fixture
def redis(monkeypatch: pytest.MonkeyPatch) -> FakeRedis:
    monkeypatch.setattr(events, "LISTENER_RETRY_SECONDS", 0.0)
    return FakeRedis()


@contextlib.asynccontextmanager
async def listening(redis: FakeRedis) -> AsyncIterator[events.RedisEventBus]:
    """A started bus whose listener talks to the fake Redis."""
    bus = events.RedisEventBus("redis://127.0.0.1:1/0")
    bus._redis = redis  # type: ignore[assignment]
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()


async def test_an_outage_is_reported_once_and_the_return_too(
    redis: FakeRedis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(events, "LISTENER_WARN_EVERY", 1e9)
    caplog.set_level(logging.WARNING, logger="lrs.events")
    async with listening(redis):
        await until(lambda: redis.attempts >= 50)
        assert said(caplog, "lost Redis") == 1
        assert said(caplog, "1 attempts so far") == 1
        assert redis.closed >= 49  # every failed subscription let go of its connection
        redis.down = False
        await until(redis.listening.is_set)
        assert said(caplog, "back on Redis") == 1


async def test_a_long_outage_is_reported_again_after_the_interval(
    redis: FakeRedis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(events, "LISTENER_WARN_EVERY", 0.0)  # every failure is "later"
    caplog.set_level(logging.WARNING, logger="lrs.events")
    async with listening(redis):
        await until(lambda: redis.attempts >= 5)
    assert said(caplog, "lost Redis") >= 4
    assert said(caplog, "4 attempts so far") == 1
