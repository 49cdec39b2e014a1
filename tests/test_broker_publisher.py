"""lrs.broker.TaskPublisher against a broker that is down: it backs off instead of opening a
connection per message (each refused connection cost the request path about 1 ms of CPU), keeps
what arrives meanwhile, and sends it together once the broker answers. A fake Celery app and a
fake clock: nothing here waits for real time but the last test's join."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lrs import broker


class FakeConnection:
    def release(self) -> None:
        pass


class FakeApp:
    """What TaskPublisher uses of the Celery app: a broker that is down until told otherwise."""

    def __init__(self) -> None:
        self.conf = type("Conf", (), {"broker_transport_options": {}})()
        self.down = True
        self.attempts = 0
        self.sent: list[tuple[str, list[Any]]] = []

    def connection_for_write(self, **_: Any) -> FakeConnection:
        self.attempts += 1
        if self.down:
            raise ConnectionRefusedError("connection refused")
        return FakeConnection()

    def send_task(self, name: str, args: list[Any], **_: Any) -> None:
        self.sent.append((name, args))


class FakeClock:
    """Time that moves only when the publisher waits (each wait is recorded)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> FakeApp:
    fake = FakeApp()
    monkeypatch.setattr(broker, "celery_app", lambda: fake)
    return fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def publisher(app: FakeApp, clock: FakeClock) -> Iterator[broker.TaskPublisher]:
    sender = broker.TaskPublisher(clock=clock, wait=clock.wait)
    yield sender
    app.down = False
    sender.close()


def send(publisher: broker.TaskPublisher, n: int) -> None:
    publisher.send(broker.DERIVE_STATEMENTS, ["store", [f"id-{n}"], [f"entry-{n}"]])
    assert publisher.flush(timeout=10)


def test_a_broker_that_stays_down_is_tried_again_after_a_growing_pause(
    publisher: broker.TaskPublisher, app: FakeApp, clock: FakeClock
) -> None:
    for n in range(7):
        send(publisher, n)
    # One attempt per message still, but never sooner than the pause after the last failure:
    # under load the messages of a pause share one attempt (next test).
    assert app.attempts == 7
    assert clock.waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert publisher.pause == 5.0
    assert app.sent == []


def test_a_send_that_succeeds_ends_the_pause(
    publisher: broker.TaskPublisher, app: FakeApp, clock: FakeClock
) -> None:
    send(publisher, 0)
    send(publisher, 1)
    assert clock.waits == [0.5]
    app.down = False
    send(publisher, 2)  # waits out the pause of the last failure, then goes through
    assert clock.waits == [0.5, 1.0]
    assert publisher.pause == 0.0
    send(publisher, 3)  # no pause any more
    assert clock.waits == [0.5, 1.0]
    assert [args[1] for _, args in app.sent] == [["id-2"], ["id-3"]]


def test_messages_that_arrive_during_a_pause_go_out_together_when_the_broker_answers(
    app: FakeApp, clock: FakeClock
) -> None:
    resting = threading.Event()
    resume = threading.Event()

    def wait(seconds: float) -> None:
        clock.wait(seconds)
        resting.set()
        assert resume.wait(10)

    publisher = broker.TaskPublisher(clock=clock, wait=wait)
    try:
        send(publisher, 0)  # refused: the publisher pauses before its next attempt
        publisher.send(broker.DERIVE_STATEMENTS, ["store", ["id-1"], ["entry-1"]])
        assert resting.wait(10)
        for n in range(2, 6):
            publisher.send(broker.DERIVE_STATEMENTS, ["store", [f"id-{n}"], [f"entry-{n}"]])
        app.down = False
        resume.set()
        assert publisher.flush(timeout=10)
        assert app.attempts == 2
        assert app.sent == [
            (
                broker.DERIVE_STATEMENTS,
                ["store", [f"id-{n}" for n in range(1, 6)], [f"entry-{n}" for n in range(1, 6)]],
            )
        ]
    finally:
        resume.set()
        publisher.close()


def test_close_ends_a_pause_and_tries_what_is_queued(app: FakeApp) -> None:
    """With the real clock: a pause of 5 s does not hold up shutdown."""
    publisher = broker.TaskPublisher()
    publisher.pause = 2.5  # the next failure sets the longest pause
    send(publisher, 0)
    assert publisher.pause == 5.0
    publisher.send(broker.DERIVE_STATEMENTS, ["store", ["id-1"], ["entry-1"]])
    thread = publisher._thread
    assert thread is not None
    app.down = False
    publisher.close(timeout=3)
    assert not thread.is_alive()
    assert app.sent == [(broker.DERIVE_STATEMENTS, ["store", ["id-1"], ["entry-1"]])]
