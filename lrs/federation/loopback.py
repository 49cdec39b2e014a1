"""A second instance of this LRS on a loopback port, as a federation peer for the integration
tests and the soak benchmark: a real uvicorn server with its own store, running on its own
thread and event loop, that can be stopped and started again on the same port ("down for a
while") and made to fail on purpose through `Chaos`.

Not used by the service itself.
"""

from __future__ import annotations

import asyncio
import base64
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Future
from typing import Any, TypeVar

import uvicorn

from lrs.app import create_app
from lrs.config import Settings
from lrs.services import Services, build_services

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def basic_auth(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


class Chaos:
    """ASGI middleware that makes requests under /xapi/ fail on purpose.

    - `fail_status`: every request is answered with this status (a peer failing for good);
    - `failure_rate`: that share of requests fails at random; `after_share` of those fail *after*
      the LRS processed them (stored, but the answer is lost), the nastiest case for a sender;
    - `retry_after`: sent with 429 and 503 answers.
    Counters say what happened.
    """

    def __init__(self, app: ASGIApp, seed: int = 0) -> None:
        self.app = app
        self.fail_status: int | None = None
        self.failure_rate = 0.0
        self.after_share = 0.5
        self.random_statuses: tuple[int, ...] = (500, 502, 503, 429)
        self.retry_after: str | None = None
        self.rng = random.Random(seed)
        self.requests: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.on_request: Callable[[Scope], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/xapi/"):
            await self.app(scope, receive, send)
            return
        self.requests[scope["method"]] += 1
        if self.on_request is not None:
            self.on_request(scope)
        if self.fail_status is not None:
            self.failures["forced"] += 1
            await self._answer(send, self.fail_status)
            return
        if self.failure_rate and self.rng.random() < self.failure_rate:
            status = self.rng.choice(self.random_statuses)
            if self.rng.random() < self.after_share:
                self.failures["after-processing"] += 1
                await self.app(scope, receive, _discard)
            else:
                self.failures["before-processing"] += 1
            await self._answer(send, status)
            return
        await self.app(scope, receive, send)

    async def _answer(self, send: Send, status: int) -> None:
        body = b'{"error":"injected failure"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if self.retry_after is not None and status in (429, 503):
            headers.append((b"retry-after", self.retry_after.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _discard(message: Message) -> None:
    return None


class LoopbackLRS:
    """This LRS on 127.0.0.1:<port>, with its own services, served by uvicorn.

    Use as a context manager; `stop()` takes it down (connections refused) and `start()` brings
    it back on the same port with the same store.
    """

    def __init__(self, settings: Settings, port: int | None = None, seed: int = 0) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.services: Services = build_services(settings)
        self.chaos = Chaos(create_app(settings, self.services), seed=seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"loopback-lrs-{self.port}", daemon=True
        )
        self._server: uvicorn.Server | None = None
        self._serving: Future[None] | None = None
        self._thread.start()
        self.run(self.services.start())

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/xapi/"

    def run(self, coroutine: Awaitable[T], timeout: float = 60.0) -> T:
        """Run a coroutine on the server's loop (where its services live) and wait for it."""

        async def wrapper() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def credential(self, scopes: list[str], store: str = "default") -> tuple[str, str]:
        created, secret = self.run(self.services.credentials.create(store, scopes, "peer"))
        return created.key, secret

    def start(self, timeout: float = 20.0) -> None:
        if self._server is not None:
            return
        config = uvicorn.Config(
            self.chaos,
            host=LOOPBACK,
            port=self.port,
            lifespan="off",  # the services are started once, above, and outlive restarts
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._serving = asyncio.run_coroutine_threadsafe(server.serve(), self._loop)
        deadline = time.monotonic() + timeout
        while not server.started:
            if self._serving.done():
                self._serving.result()  # raises why it could not start
                raise RuntimeError(f"the loopback LRS did not start on port {self.port}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the loopback LRS did not start within {timeout}s")
            time.sleep(0.01)

    def stop(self, timeout: float = 20.0) -> None:
        """Take the server down: new connections are refused until start()."""
        server, serving = self._server, self._serving
        self._server = self._serving = None
        if server is None or serving is None:
            return
        server.should_exit = True
        serving.result(timeout)

    def statement_ids(self, store: str = "default") -> set[str]:
        collection = self.services.database["statements"]
        return set(self.run(collection.distinct("id", {"store": store})))

    def close(self) -> None:
        try:
            self.stop()
            self.run(self.services.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> LoopbackLRS:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
