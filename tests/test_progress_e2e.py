"""End to end: statements POSTed to a running API are derived by a real Celery worker through
a real Redis, and the change reaches GET /progress and an open SSE stream (design notes 1, 5, 6).

Two topologies, chosen by the `make_stack` fixture:

- "threads" (always runs): a real uvicorn server on a loopback port (its own thread and event
  loop, the production app with `LRS_DERIVATION=celery`), a real Celery worker (a
  `WorkController` thread consuming a private queue on the real Redis broker) and the real
  Redis pub/sub between them. API and worker share one embedded store object; the worker
  gets its own `Services` (own event loop, own Redis clients) through
  `workers.runtime.configure`, built on the API's database object.
- "processes": `lrs serve` and `lrs worker` as subprocesses on the real Redis, sharing the
  MongoDB of LRS_TEST_MONGODB_URL when set, else one embedded data directory: the production
  deployment, nothing shared in memory.

The module also holds the harness used by tests/test_progress_faults.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from lrs.config import Settings
from lrs.storage.database import Database, open_database, open_embedded
from lrs.storage.outbox import Outbox
from tests.redis_hygiene import forget_and_check

LOOPBACK = "127.0.0.1"
EVENT_TIMEOUT = 15.0  # generous: a derivation takes milliseconds; only a broken chain waits
READY_TIMEOUT = 30.0
MONGODB_URL = os.environ.get("LRS_TEST_MONGODB_URL")
MODES = ["threads", "processes"]
VERBS = "http://adlnet.gov/expapi/verbs/"


# --- the harness ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def celery_broker(redis_url: str) -> str:
    """kombu spells a Redis Unix socket `redis+socket://`; redis-py spells it `unix://`."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def api_client(base_url: str, auth: str, timeout: float = 10.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": auth, "X-Experience-API-Version": "1.0.3"},
        timeout=timeout,
    )


class SharedDatabase(Database):
    """The host's database seen by the embedded worker: same collections, but closing it is
    left to its owner (the API services)."""

    def __init__(self, inner: Database) -> None:
        super().__init__(inner.kind, inner.__getitem__)


class ThreadedServer:
    """A real uvicorn server for the LRS app, on a loopback socket, in a thread. The server
    class of `lrs serve`, so that stopping it ends open event streams as in production."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from lrs.server import Server

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((LOOPBACK, 0))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,  # leave the test process's logging alone
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
        self.server = Server(config)
        self.server.apps.append(app)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server thread did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self._socket.close()
        if self.thread.is_alive():
            raise RuntimeError("the API server thread did not stop within 15 s")


@contextlib.contextmanager
def celery_app_on(broker: str, queue: str) -> Iterator[Any]:
    """Point the project's Celery app at `broker`, routing every task to `queue` (private to
    this test, so no other worker on the same Redis can take our tasks); restore afterwards."""
    from workers.celery_app import app

    names = ("broker_url", "task_default_queue", "worker_hijack_root_logger")
    saved = {name: app.conf[name] for name in names}

    def reset() -> None:
        # Connection and producer pools (kombu keeps them in process-wide registries) and the
        # amqp object (queues, router) are cached from the configuration first seen.
        from kombu import pools

        pools.reset()
        app._pool = None
        app.__dict__.pop("amqp", None)

    app.conf.update(broker_url=broker, task_default_queue=queue, worker_hijack_root_logger=False)
    reset()
    try:
        yield app
    finally:
        app.conf.update(saved)
        reset()


def drop_queue(redis_url: str, queue: str) -> None:
    """Delete the queue, its messages and kombu's bindings of it (tests/redis_hygiene.py)."""
    import gc

    import redis

    from tests.redis_hygiene import forget

    # A stopped worker's channel hands its prefetched, unacknowledged messages back to the
    # queue when it is closed, which may wait for the garbage collector.
    gc.collect()
    with contextlib.suppress(redis.RedisError):
        forget(redis_url, queues=[queue])


class TaskLog:
    """Every Celery task this process ran, from the task_postrun signal."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, tuple[Any, ...], str]] = []

    def __call__(self, task: Any = None, args: Any = (), state: Any = None, **_: Any) -> None:
        self.runs.append((getattr(task, "name", "?"), tuple(args or ()), str(state)))

    def statements_derived(self, store: str) -> set[str]:
        return {
            statement_id
            for name, args, state in self.runs
            if name == "lrs.derive_statements" and state == "SUCCESS" and args[0] == store
            for statement_id in args[1]
        }


async def derived_flags(database: Any, store: str, ids: list[str]) -> dict[str, bool]:
    """For each stored statement: whether nothing is owed for its derivation any more (its
    outbox entry is gone), read from the store itself."""
    owed = await Outbox(database).owed("derive", store, ids)
    docs = await database["statements"].find(
        {"store": store, "id": {"$in": ids}}, projection={"id": 1}
    )
    return {doc["id"]: doc["id"] not in owed for doc in docs}


class Stack:
    """A running API plus Celery worker on a real Redis. See the module docstring."""

    mode: str
    base_url: str
    store: str
    key: str
    secret: str

    @property
    def auth(self) -> str:
        return basic(self.key, self.secret)

    def client(self, timeout: float = 10.0) -> httpx.AsyncClient:
        return api_client(self.base_url, self.auth, timeout)

    async def derived_flags(self, ids: list[str]) -> dict[str, bool]:
        """The outbox marker of each statement, read from the store itself."""
        raise NotImplementedError

    def send_task(self, name: str) -> None:
        """Send a task by name through the stack's broker, as `lrs beat` would."""
        raise NotImplementedError

    def start_worker(self) -> None:
        raise NotImplementedError

    def stop_worker(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ThreadStack(Stack):
    mode = "threads"

    def __init__(
        self,
        redis_url: str,
        data_dir: Path,
        *,
        store: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        sweep_interval: float = 30.0,
        outbox_grace: float = 30.0,
        worker: bool = True,
        worker_settings: dict[str, Any] | None = None,
    ) -> None:
        from celery import signals

        from lrs.app import create_app
        from lrs.services import build_services
        from workers import runtime

        self.store = store or f"e2e-{uuid.uuid4().hex[:10]}"
        self.key = key or "e2e-" + secrets.token_hex(4)
        self.secret = secret or secrets.token_urlsafe(18)
        self.queue = f"lrs-test-{uuid.uuid4().hex[:10]}"
        self.redis_url = redis_url
        self.nodes: list[str] = []
        self.tasks = TaskLog()
        self._stack = contextlib.ExitStack()
        self._worker: contextlib.ExitStack | None = None
        common: dict[str, Any] = {
            "storage": "embedded",
            "data_dir": data_dir,
            "database": "lrs",
            "redis_url": redis_url,
            "derivation": "celery",
            "sweep_interval": sweep_interval,
            "outbox_grace": outbox_grace,
        }
        settings = Settings(
            **common, admin_key=self.key, admin_secret=self.secret, admin_store=self.store
        )
        try:
            # Runs last: drop the queue (sweeps may have refilled it after the worker stopped).
            self._stack.callback(drop_queue, redis_url, self.queue)
            self.app = self._stack.enter_context(
                celery_app_on(celery_broker(redis_url), self.queue)
            )
            signals.task_postrun.connect(self.tasks, weak=False)
            self._stack.callback(signals.task_postrun.disconnect, self.tasks)
            api = create_app(settings)
            self.services = api.state.services
            for_worker = Settings(**(common | (worker_settings or {})))
            runtime.configure(
                lambda: build_services(for_worker, SharedDatabase(self.services.database))
            )
            self._stack.callback(runtime.configure, None)
            server = ThreadedServer(api)
            server.start()
            self._stack.callback(server.stop)
            self.base_url = f"http://{LOOPBACK}:{server.port}"
            if worker:
                self.start_worker()
        except BaseException:
            self.close()
            raise

    def start_worker(self) -> None:
        from celery.contrib.testing.worker import start_worker

        assert self._worker is None
        self._worker = contextlib.ExitStack()
        self.nodes.append(f"{self.queue}-{len(self.nodes)}@{LOOPBACK}")
        self._worker.enter_context(
            start_worker(
                self.app,
                hostname=self.nodes[-1],
                pool="solo",
                concurrency=1,
                perform_ping_check=False,
                queues=[self.queue],
                loglevel="WARNING",
                shutdown_timeout=15,
            )
        )

    def stop_worker(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            worker.close()

    def send_task(self, name: str) -> None:
        self.app.send_task(name)

    async def derived_flags(self, ids: list[str]) -> dict[str, bool]:
        return await derived_flags(self.services.database, self.store, ids)

    def close(self) -> None:
        try:
            self.stop_worker()
        finally:
            self._stack.close()
        # Nothing of this stack stays in the shared Redis.
        forget_and_check(self.redis_url, queues=[self.queue], stores=[self.store], nodes=self.nodes)


def _lrs(*args: str) -> list[str]:
    return [sys.executable, "-m", "lrs.cli", *args]


class ChildProcess:
    """A subprocess in its own session with its output in a log file; always stopped."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.base_url = ""  # for servers
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                command,
                env=env,
                cwd=log.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{what} exited ({self.process.returncode}):\n{self.text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready in {READY_TIMEOUT:.0f} s:\n{self.text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def child_env(**values: str) -> dict[str, str]:
    """The caller's environment without any LRS_ setting, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRS_")}
    env.update(values)
    return env


def start_api_process(
    env: dict[str, str],
    workdir: Path,
    name: str = "api",
    *,
    args: tuple[str, ...] = (),
    ready_path: str = "/xapi/about",
) -> ChildProcess:
    """`lrs serve` (with `args`) on a free loopback port, once `ready_path` answers 200; `env`
    must hold the LRS_ settings."""
    port = free_port()
    env = {**env, "LRS_HOST": LOOPBACK, "LRS_PORT": str(port)}
    env["LRS_PUBLIC_URL"] = f"http://{LOOPBACK}:{port}"
    command = _lrs(
        "serve", "--host", LOOPBACK, "--port", str(port), "--log-level", "warning", *args
    )
    child = ChildProcess(command, env, workdir / f"{name}.log")
    child.base_url = f"http://{LOOPBACK}:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{child.base_url}{ready_path}", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        child.wait_for(answers, "lrs serve")
    except BaseException:
        child.stop()
        raise
    return child


class ProcessStack(Stack):
    mode = "processes"

    def __init__(
        self,
        redis_url: str,
        workdir: Path,
        *,
        database: str | None = None,
        store: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        sweep_interval: float = 30.0,
        outbox_grace: float = 30.0,
        worker: bool = True,
        worker_settings: dict[str, Any] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.workdir = workdir
        self.database = database or f"lrs_e2e_{uuid.uuid4().hex[:10]}"
        self.store = store or f"e2e-{uuid.uuid4().hex[:10]}"
        self.key = key or "e2e-" + secrets.token_hex(4)
        self.secret = secret or secrets.token_urlsafe(18)
        # A queue private to this stack: no other worker on this Redis takes its tasks.
        self.queue = f"lrs-test-{uuid.uuid4().hex[:10]}"
        self.nodes: list[str] = []
        # Without MongoDB both processes share the embedded store (SQLite locks it).
        storage = (
            {"LRS_STORAGE": "mongodb", "LRS_MONGODB_URL": MONGODB_URL}
            if MONGODB_URL
            else {"LRS_STORAGE": "embedded", "LRS_DATA_DIR": str(workdir / "data")}
        )
        self.env = child_env(
            **storage,
            LRS_DATABASE=self.database,
            LRS_REDIS_URL=redis_url,
            LRS_DERIVATION="celery",
            LRS_CELERY_QUEUE=self.queue,
            LRS_SWEEP_INTERVAL=str(sweep_interval),
            LRS_OUTBOX_GRACE=str(outbox_grace),
            LRS_ADMIN_KEY=self.key,
            LRS_ADMIN_SECRET=self.secret,
            LRS_ADMIN_STORE=self.store,
        )
        self.worker_env = self.env | {
            f"LRS_{name.upper()}": str(value) for name, value in (worker_settings or {}).items()
        }
        self._worker: ChildProcess | None = None
        self._workers = 0
        self.api = start_api_process(self.env, workdir)
        self.base_url = self.api.base_url
        if worker:
            try:
                self.start_worker()
            except BaseException:
                self.api.stop()
                raise

    def start_worker(self) -> None:
        assert self._worker is None
        self._workers += 1
        name = f"{self.queue}-{self._workers}@{LOOPBACK}"
        self.nodes.append(name)
        command = _lrs(
            "worker", "--pool", "solo", "--without-mingle", "--without-gossip", "-n", name
        )
        worker = ChildProcess(command, self.worker_env, self.workdir / f"worker{self._workers}.log")
        try:
            worker.wait_for(lambda: " ready." in worker.text(), "lrs worker")
        except BaseException:
            worker.stop()
            raise
        self._worker = worker

    def stop_worker(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            worker.stop()

    def send_task(self, name: str) -> None:
        with celery_app_on(celery_broker(self.redis_url), self.queue) as app:
            app.send_task(name)

    async def derived_flags(self, ids: list[str]) -> dict[str, bool]:
        if MONGODB_URL:
            settings = Settings(storage="mongodb", mongodb_url=MONGODB_URL, database=self.database)
            database = open_database(settings)
        else:
            database = open_embedded(self.workdir / "data", self.database)
        try:
            return await derived_flags(database, self.store, ids)
        finally:
            await database.close()

    def close(self) -> None:
        try:
            self.stop_worker()
        finally:
            self.api.stop()
            drop_queue(self.redis_url, self.queue)
            forget_and_check(
                self.redis_url, queues=[self.queue], stores=[self.store], nodes=self.nodes
            )
            if MONGODB_URL:
                from pymongo import MongoClient

                client: Any = MongoClient(MONGODB_URL, serverSelectionTimeoutMS=5000)
                with contextlib.suppress(Exception):
                    client.drop_database(self.database)
                client.close()


class EventStream:
    """An SSE client on a real connection: a task parses events (with their arrival time) into
    `events`; `wait_for` polls them with a deadline, so nothing can hang."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.params = params or {}
        self.headers = headers or {}
        self.events: list[dict[str, Any]] = []
        self.status: int | None = None
        self.error = ""
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventStream:
        self._task = asyncio.create_task(self._read())
        try:
            async with asyncio.timeout(EVENT_TIMEOUT):
                await self._connected.wait()
        except BaseException:
            await self.close()
            raise
        if self.status != 200:
            raise AssertionError(f"/progress/stream answered {self.status}: {self.error}")
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task

    async def _read(self) -> None:
        try:
            async with self.client.stream(
                "GET",
                "/progress/stream",
                params=self.params,
                headers=self.headers,
                timeout=httpx.Timeout(10.0, read=None),
            ) as response:
                self.status = response.status_code
                if response.status_code != 200:
                    self.error = (await response.aread()).decode(errors="replace")
                    return
                assert response.headers["content-type"].startswith("text/event-stream")
                fields: dict[str, str] = {}
                async for line in response.aiter_lines():
                    if line.startswith(":"):
                        if line.startswith(": connected"):
                            self._connected.set()
                        continue
                    if line:
                        name, _, value = line.partition(":")
                        fields[name] = value[1:] if value.startswith(" ") else value
                        continue
                    if "data" in fields:
                        self.events.append(
                            {
                                "id": fields.get("id"),
                                "event": fields.get("event"),
                                "record": json.loads(fields["data"]),
                                "at": time.perf_counter(),
                            }
                        )
                    fields = {}
        finally:
            self._connected.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = EVENT_TIMEOUT
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if predicate(event["record"]):
                    return event
            if self._task is not None and self._task.done():
                raise AssertionError(f"the stream ended; events so far: {self.events}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event in {timeout} s; got {self.events}")
            await asyncio.sleep(0.01)


async def eventually(
    condition: Callable[[], Any], what: str, timeout: float = EVENT_TIMEOUT
) -> None:
    """Wait, bounded, for an eventual state. A condition (sync or async) on state the system
    sets after the signal a test waited for (derivation publishes a record before it marks the
    statements derived, and Celery logs a task after it returns) is polled, never read once."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = EVENT_TIMEOUT
) -> None:
    await eventually(check, what, timeout)


async def events_flow(stack: Stack, redis_url: str) -> None:
    """Wait until the API's Redis listener delivers to SSE clients: publish probes on the
    store's channel until one arrives (the listener subscribes asynchronously at start-up)."""
    import redis.asyncio as redis_async

    from lrs.events import channel

    probe = {"id": "0", "record": {"probe": True}}
    publisher = redis_async.Redis.from_url(redis_url)
    try:
        async with stack.client() as client, EventStream(client) as stream:
            deadline = time.monotonic() + EVENT_TIMEOUT
            while not stream.events:
                assert time.monotonic() < deadline, "the API never relayed a Redis event"
                await publisher.publish(channel(stack.store), json.dumps(probe))
                await asyncio.sleep(0.05)
    finally:
        await publisher.aclose()


# --- course and statements -----------------------------------------------------------------


class Course:
    """A unique course (two modules) and learner per test, so nothing another test (or another
    person's run on the same Redis) publishes can be mistaken for ours."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.id = f"http://example.com/e2e/{tag}/course"
        self.m1 = f"{self.id}/m1"
        self.m2 = f"{self.id}/m2"
        self.page1 = f"http://example.com/e2e/{tag}/page1"
        self.page2 = f"http://example.com/e2e/{tag}/page2"
        self.quiz = f"http://example.com/e2e/{tag}/quiz"
        self.video = f"http://example.com/e2e/{tag}/video"
        self.tag = tag

    def definition(self) -> dict[str, Any]:
        return {
            "title": "E2E",
            "modules": [
                {
                    "id": self.m1,
                    "title": "Basics",
                    "content": [self.page1, self.page2],
                    "assessment": self.quiz,
                    "mastery_score": 0.8,
                },
                {"id": self.m2, "title": "Video", "content": [self.video]},
            ],
        }

    def learner(self, name: str = "ada") -> dict[str, Any]:
        return {"objectType": "Agent", "mbox": f"mailto:{name}-{self.tag}@example.com"}

    def key(self, name: str = "ada") -> str:
        return f"mbox:mailto:{name}-{self.tag}@example.com"

    async def put(self, client: httpx.AsyncClient) -> None:
        response = await client.put(f"/courses/{quote(self.id, safe='')}", json=self.definition())
        assert response.status_code in (200, 201), response.text


def stmt(
    learner: dict[str, Any], verb: str, obj: str, ts: str, result: dict | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "actor": learner,
        "verb": {"id": VERBS + verb},
        "object": {"objectType": "Activity", "id": obj},
        "timestamp": ts,
    }
    if result is not None:
        body["result"] = result
    return body


async def post(client: httpx.AsyncClient, *statements: dict[str, Any]) -> list[str]:
    response = await client.post("/xapi/statements", json=list(statements))
    assert response.status_code == 200, response.text
    return response.json()


async def progress(client: httpx.AsyncClient, learner: dict[str, Any], module: str) -> dict:
    response = await client.get(
        "/progress", params={"learner": json.dumps(learner), "module": module}
    )
    assert response.status_code == 200, response.text
    records = response.json()["records"]
    return records[0] if records else {"status": "not_started"}


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def live_redis(redis_url: str) -> str:
    if not redis_answers(redis_url):
        pytest.skip(f"no Redis answers at {redis_url}; these tests need a real broker")
    return redis_url


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_stack(mode: str, live_redis: str, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Builds stacks (several in one test share `tmp_path`'s store); closes them all."""
    stacks: list[Stack] = []

    def make(**options: Any) -> Stack:
        stack: Stack
        if mode == "threads":
            options.pop("database", None)
            stack = ThreadStack(live_redis, tmp_path / "data", **options)
        else:
            options.pop("data_dir", None)
            stack = ProcessStack(live_redis, tmp_path, **options)
        stacks.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in reversed(stacks):
            stack.close()


# --- the test ------------------------------------------------------------------------------


async def test_statement_to_progress_to_sse_through_celery_and_redis(
    make_stack: Callable[..., Stack], live_redis: str
) -> None:
    """POST -> stored with derived:false -> Celery task on Redis -> worker derives -> record
    in GET /progress and the change pushed over Redis pub/sub to an open SSE stream."""
    stack = make_stack()
    await events_flow(stack, live_redis)
    course = Course()
    ada = course.learner()
    async with (
        stack.client() as client,
        EventStream(client, params={"course": course.id}) as stream,
    ):
        await course.put(client)
        first = await post(client, stmt(ada, "experienced", course.page1, "2026-03-01T10:00:00Z"))
        started = await stream.wait_for(
            lambda r: r["learner"] == course.key() and r["module"] == course.m1
        )
        # Pushed only after it was written: the REST read shows at least that state.
        record = await progress(client, ada, course.m1)
        assert started["record"]["status"] == "in_progress"
        assert record["status"] == "in_progress" and record["viewed"] == 1
        assert record["started_at"] == "2026-03-01T10:00:00.000000Z"
        rest = await post(
            client,
            stmt(ada, "experienced", course.page2, "2026-03-01T10:05:00Z"),
            stmt(ada, "passed", course.quiz, "2026-03-01T10:09:00Z", {"score": {"scaled": 0.9}}),
        )
        done = await stream.wait_for(
            lambda r: r["module"] == course.m1 and r["status"] == "completed"
        )
        assert int(done["id"]) > int(started["id"])
        assert done["record"]["version"] > started["record"]["version"]
        record = await progress(client, ada, course.m1)
        assert record["status"] == "completed" and record["percent"] == 100
        assert record["completed_at"] == "2026-03-01T10:09:00.000000Z"
        assert record["best_score"] == 0.9 and record["passed"] is True
        # Another module was untouched: no record, no event.
        assert (await progress(client, ada, course.m2))["status"] == "not_started"
        assert all(e["record"]["module"] == course.m1 for e in stream.events)
    ids = first + rest

    # "Eventually derived": the worker publishes each record before it deletes the outbox
    # entry, so the entry may outlive the event the stream showed.
    async def all_marked_derived() -> bool:
        return await stack.derived_flags(ids) == {i: True for i in ids}

    await eventually(all_marked_derived, "every statement marked derived")
    if isinstance(stack, ThreadStack):
        # The API process has no deriver on this path; the worker thread's tasks did it
        # (each logged once it returned).
        assert type(stack.services.dispatcher).__name__ == "CeleryDispatcher"
        await eventually(
            lambda: stack.tasks.statements_derived(stack.store) == set(ids),
            "the worker's derivation tasks to be logged",
        )


def test_lrs_worker_execs_a_celery_worker_on_the_broker(live_redis: str, tmp_path: Path) -> None:
    """`lrs worker` refuses to start without a broker, and with one execs a real Celery worker
    of the `workers` app, passing extra arguments through (here: a private queue)."""
    missing = subprocess.run(
        _lrs("worker"), env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "LRS_REDIS_URL is not set" in missing.stderr
    queue = f"lrs-test-{uuid.uuid4().hex[:10]}"
    command = _lrs(
        "worker",
        "-Q",
        queue,
        "--pool",
        "solo",
        "--without-mingle",
        "--without-gossip",
        "-n",
        f"{queue}@%h",
    )
    # The queue is the app's too (LRS_CELERY_QUEUE): the sweep the worker sends as it starts
    # goes there, not to the default `celery` queue of the shared Redis.
    env = child_env(
        LRS_REDIS_URL=celery_broker(live_redis), LRS_STORAGE="memory", LRS_CELERY_QUEUE=queue
    )
    worker = ChildProcess(command, env, tmp_path / "worker.log")
    try:
        worker.wait_for(lambda: " ready." in worker.text(), "lrs worker")
        banner = worker.text()
        assert f".> {queue}" in banner and "lrs.derive_statements" in banner, banner
    finally:
        worker.stop()
        drop_queue(live_redis, queue)
        forget_and_check(live_redis, queues=[queue], nodes=[f"{queue}@"])
    # The exec'd Celery itself handled SIGTERM: a warm shutdown, not a kill.
    assert worker.process.returncode == 0, worker.text()


async def test_ready_sees_the_running_worker_by_its_heartbeat(
    mode: str, make_stack: Callable[..., Stack]
) -> None:
    """A Celery worker records heartbeats in the store; `/ready` is ready only while one is
    recent, and names the worker."""
    if mode == "threads":
        pytest.skip("Celery's in-thread test worker sends no worker_ready: `lrs worker` only")
    stack = make_stack()
    async with stack.client() as client:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            response = await client.get("/ready")
            workers = response.json()["checks"]["workers"]
            if response.status_code == 200 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
        assert response.status_code == 200, response.text
        assert workers["ok"] and workers["mode"] == "celery", workers
        assert len(workers["workers"]) >= 1
