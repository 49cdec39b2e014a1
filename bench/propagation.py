"""Propagation benchmark: the delay from a statement's acknowledgement (its POST response) to
the SSE event that shows its effect on progress (design notes 6), at a steady offered load.

    python -m bench.propagation                 # 200 statements/s for 30 s, every mode
    python -m bench.propagation --seconds 5 --mode celery-threads

Modes (each on a fresh store, all over loopback HTTP, the load generator and the SSE client in
this process):
- embedded:        `lrs serve` with LRS_DERIVATION=inprocess and no Redis: derivation on a
                   task of the API process, events on its in-process bus.
- celery-threads:  the Celery + Redis path on one machine without MongoDB: a server process
                   running the API (uvicorn) and one real Celery worker (solo pool, a private
                   queue on the real Redis broker) as threads, sharing the embedded store,
                   which is only safe within one process; events go through Redis pub/sub.
                   Differs from production in that API and worker share one interpreter (GIL).
- celery-processes: production topology: `lrs serve` + one `lrs worker` on MongoDB
                   (LRS_MONGODB_URL) and Redis. Skipped, saying why, without LRS_MONGODB_URL.

The workload: learners x modules (learner, module) pairs, each module with `items` content
items and no assessment. Statement n is "experienced item k" of pair n % pairs, so every
statement changes its record's `viewed` count and a pair's statements are `pairs / rate`
seconds apart. A statement (pair, k) is visible at the first SSE event for its pair whose
`viewed` is at least k; so a derivation that covers several statements at once counts for
each of them. A statement whose effect was pushed before its own POST had answered counts as
0 ms (reported as "before ack").

Worker throughput: statements made visible per second over the run (equals the offered load
when the worker keeps up), and for celery-threads also the worker's capacity: statements
derived per second of task execution time (Celery task_prerun/postrun in the worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.server import LOOPBACK, BenchError, Server, free_port
from bench.stats import percentile

MODES = ("embedded", "celery-threads", "celery-processes")
ROOT = Path(__file__).resolve().parents[1]
VIEWED = "http://adlnet.gov/expapi/verbs/experienced"
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Config:
    rate: float = 200.0  # statements per second offered
    seconds: float = 30.0
    batch_size: int = 1  # statements per POST
    warmup: float = 2.0  # seconds of load before the measured run (other learners)
    modules: int = 5
    items: int = 20
    drain_timeout: float = 30.0  # after the last POST, how long to wait for the events
    # Requests in flight at most. An overloaded server then sees fewer statements per second
    # than offered (reported as sent/s), instead of the client queueing thousands of requests.
    max_in_flight: int = 64

    @property
    def statements(self) -> int:
        return int(self.rate * self.seconds)

    def learners(self, statements: int) -> int:
        return max(1, math.ceil(statements / (self.modules * self.items)))


@dataclass
class Result:
    mode: str
    label: str
    skipped: str = ""
    statements: int = 0
    offered_rate: float = 0.0
    sent_rate: float = 0.0  # POSTs started per second, in statements
    unsent: int = 0  # not sent within the run: every in-flight slot was taken to the end
    acked: int = 0
    errors: int = 0
    post_p50_ms: float = 0.0
    post_p99_ms: float = 0.0
    visible: int = 0
    missing: int = 0
    before_ack: int = 0
    delay_p50_ms: float = 0.0
    delay_p99_ms: float = 0.0
    delay_max_ms: float = 0.0
    visible_rate: float = 0.0  # statements made visible per second, first ack to last event
    drain_s: float = 0.0  # last POST answered -> last statement visible
    events: int = 0
    worker: dict[str, Any] = field(default_factory=dict)


# --- the workload --------------------------------------------------------------------------


class Workload:
    def __init__(self, config: Config, tag: str) -> None:
        self.config = config
        self.tag = tag
        self.course = f"http://example.com/bench/{tag}/course"
        self.modules = [f"{self.course}/m{j}" for j in range(config.modules)]

    def item(self, module: int, k: int) -> str:
        return f"{self.modules[module]}/item{k}"

    def definition(self) -> dict[str, Any]:
        return {
            "title": "Propagation benchmark",
            "modules": [
                {
                    "id": module,
                    "title": f"Module {j}",
                    "content": [self.item(j, k) for k in range(1, self.config.items + 1)],
                }
                for j, module in enumerate(self.modules)
            ],
        }

    def statements(self, prefix: str, count: int) -> list[tuple[tuple[str, str], int, dict]]:
        """(pair key, k, statement): pair = (learner key, module id), k = 1.."""
        learners = self.config.learners(count)
        pairs = learners * self.config.modules
        out = []
        base = 1_767_225_600_000  # 2026-01-01, in ms: statement times, not wall-clock
        for n in range(count):
            pair, k = n % pairs, n // pairs + 1
            learner, module = pair // self.config.modules, pair % self.config.modules
            mbox = f"mailto:{prefix}{learner}-{self.tag}@example.com"
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((base + n) // 1000))
            statement = {
                "actor": {"objectType": "Agent", "mbox": mbox},
                "verb": {"id": VIEWED},
                "object": {"objectType": "Activity", "id": self.item(module, k)},
                "timestamp": f"{stamp}.{(base + n) % 1000:03d}Z",
            }
            out.append(((f"mbox:{mbox}", self.modules[module]), k, statement))
        return out


# --- SSE -----------------------------------------------------------------------------------


class Stream:
    """Reads /progress/stream on a task, keeping (arrival time, record) of every event."""

    def __init__(self, client: httpx.AsyncClient, course: str) -> None:
        self.client = client
        self.course = course
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.connected = asyncio.Event()
        self.failure = ""
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._read())
        async with asyncio.timeout(15):
            await self.connected.wait()
        if self.failure:
            raise BenchError(f"SSE stream: {self.failure}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self.task

    async def _read(self) -> None:
        try:
            async with self.client.stream(
                "GET",
                "/progress/stream",
                params={"course": self.course},
                timeout=httpx.Timeout(15.0, read=None),
            ) as response:
                if response.status_code != 200:
                    self.failure = f"{response.status_code} {(await response.aread())[:300]!r}"
                    return
                data = ""
                async for line in response.aiter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif not line and data:
                        self.events.append((time.perf_counter(), json.loads(data)))
                        data = ""
        except httpx.HTTPError as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.connected.set()


async def _probe_redis_events(client: httpx.AsyncClient, redis_url: str, store: str) -> None:
    """Publish probes on the store's channel until the API relays one: its Redis listener
    subscribes asynchronously at start-up, and events published before that are lost."""
    import redis.asyncio as redis_async

    from lrs.events import channel

    stream = Stream(client, course="urn:x-bench:probe")
    publisher = redis_async.Redis.from_url(redis_url)
    probe = json.dumps({"id": "0", "record": {"course": "urn:x-bench:probe"}})
    try:
        await stream.start()
        deadline = time.monotonic() + 15
        while not stream.events:
            if time.monotonic() > deadline:
                raise BenchError("the API never relayed an event published on Redis")
            await publisher.publish(channel(store), probe)
            await asyncio.sleep(0.05)
    finally:
        await stream.stop()
        await publisher.aclose()


# --- load ----------------------------------------------------------------------------------


async def _offer(
    client: httpx.AsyncClient,
    batches: list[list[tuple[tuple[str, str], int, dict]]],
    config: Config,
    acks: dict[tuple[tuple[str, str], int], float],
    post_latencies: list[float],
    duration: float,
) -> tuple[float, int, int]:
    """Open loop: batch i is sent at start + i * batch_size / rate whatever the answers of
    earlier ones, up to `max_in_flight` requests, and nothing after `duration` seconds.
    Returns (seconds spent sending, failed requests, statements left unsent)."""
    interval = config.batch_size / config.rate
    errors = 0
    tasks: set[asyncio.Task[None]] = set()
    in_flight = asyncio.Semaphore(config.max_in_flight)

    async def send(batch: list[tuple[tuple[str, str], int, dict]]) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            response = await client.post("/xapi/statements", json=[s for _, _, s in batch])
        except httpx.HTTPError:
            errors += 1
            return
        finally:
            in_flight.release()
        answered = time.perf_counter()
        if response.status_code != 200:
            errors += 1
            return
        post_latencies.append(answered - started)
        for pair, k, _ in batch:
            acks[(pair, k)] = answered

    start = time.perf_counter()
    stop = start + duration
    unsent = 0
    for i, batch in enumerate(batches):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # An overloaded server holds every slot: the offer is over once the time is up.
        try:
            remaining = stop - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError
            await asyncio.wait_for(in_flight.acquire(), timeout=remaining)
        except TimeoutError:
            unsent = sum(len(b) for b in batches[i:])
            break
        task = asyncio.create_task(send(batch))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sent = min(time.perf_counter(), stop) - start
    if tasks:
        await asyncio.wait(tasks, timeout=config.drain_timeout + 60)
    return sent, errors, unsent


def _match(
    events: list[tuple[float, dict[str, Any]]], wanted: set[tuple[tuple[str, str], int]]
) -> dict[tuple[tuple[str, str], int], float]:
    """When each statement became visible: the first event of its pair with viewed >= k."""
    visible: dict[tuple[tuple[str, str], int], float] = {}
    next_k: dict[tuple[str, str], int] = {}
    for at, record in events:
        pair = (record.get("learner"), record.get("module"))
        viewed = record.get("viewed")
        if not isinstance(viewed, int):
            continue
        for k in range(next_k.get(pair, 1), viewed + 1):
            if (pair, k) in wanted:
                visible[(pair, k)] = at
        next_k[pair] = max(next_k.get(pair, 1), viewed + 1)
    return visible


async def measure(
    base_url: str, auth: str, config: Config, redis_url: str | None, store: str, result: Result
) -> None:
    workload = Workload(config, uuid.uuid4().hex[:8])
    limits = httpx.Limits(
        max_connections=config.max_in_flight, max_keepalive_connections=config.max_in_flight
    )
    headers = {"Authorization": auth, "X-Experience-API-Version": "1.0.3"}
    async with (
        httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as client,
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=15) as sse_client,
    ):
        response = await client.put(
            f"/courses/{quote(workload.course, safe='')}", json=workload.definition()
        )
        if response.status_code not in (200, 201):
            raise BenchError(f"PUT course answered {response.status_code}: {response.text[:300]}")
        if redis_url:
            await _probe_redis_events(sse_client, redis_url, store)
        stream = Stream(sse_client, workload.course)
        await stream.start()
        try:
            if config.warmup > 0:
                warm = workload.statements("warm", int(config.rate * config.warmup))
                await _offer(client, _batches(warm, config), config, {}, [], config.warmup)
            measured = workload.statements("learner", config.statements)
            wanted = {(pair, k) for pair, k, _ in measured}
            acks: dict[tuple[tuple[str, str], int], float] = {}
            post_latencies: list[float] = []
            sent_seconds, errors, unsent = await _offer(
                client, _batches(measured, config), config, acks, post_latencies, config.seconds
            )
            last_ack = max(acks.values(), default=time.perf_counter())
            deadline = time.monotonic() + config.drain_timeout
            while time.monotonic() < deadline:
                if len(_match(stream.events, set(acks))) >= len(acks):
                    break
                await asyncio.sleep(0.1)
        finally:
            await stream.stop()
    visible = _match(stream.events, wanted)
    delays = sorted(max(0.0, visible[key] - acks[key]) for key in acks if key in visible)
    first_ack = min(acks.values(), default=0.0)
    last_visible = max((visible[key] for key in acks if key in visible), default=first_ack)
    result.statements = len(measured)
    result.unsent = unsent
    result.acked = len(acks)
    result.offered_rate = config.rate
    sent = len(measured) - unsent
    result.sent_rate = round(sent / sent_seconds, 1) if sent_seconds else 0.0
    result.errors = errors
    latencies = sorted(post_latencies)
    result.post_p50_ms = round(percentile(latencies, 0.50) * 1000, 1)
    result.post_p99_ms = round(percentile(latencies, 0.99) * 1000, 1)
    result.visible = len(delays)
    result.missing = len(acks) - len(delays)
    result.before_ack = sum(1 for key in acks if key in visible and visible[key] < acks[key])
    result.delay_p50_ms = round(percentile(delays, 0.50) * 1000, 1)
    result.delay_p99_ms = round(percentile(delays, 0.99) * 1000, 1)
    result.delay_max_ms = round((delays[-1] if delays else 0.0) * 1000, 1)
    span = last_visible - first_ack
    result.visible_rate = round(len(delays) / span, 1) if span > 0 else 0.0
    result.drain_s = round(max(0.0, last_visible - last_ack), 3)
    result.events = len(stream.events)


def _batches(statements: list, config: Config) -> list[list]:
    size = config.batch_size
    return [statements[i : i + size] for i in range(0, len(statements), size)]


# --- the modes -----------------------------------------------------------------------------


def _basic(key: str, secret: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def _redis_answers(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:  # noqa: BLE001 - any failure means: no Redis to use
        return False


def run_embedded(config: Config) -> Result:
    result = Result("embedded", "embedded store, in-process derivation, in-process events")
    with Server.start("embedded", extra_env={"LRS_DERIVATION": "inprocess"}) as server:
        asyncio.run(
            measure(
                server.base_url, _basic(server.key, server.secret), config, None, "default", result
            )
        )
        problems = server.problems()
    if problems:
        print(f"  server log of embedded: {len(problems)} problem line(s), e.g. {problems[0]}")
    return result


def run_celery_threads(config: Config, redis_url: str) -> Result:
    result = Result(
        "celery-threads",
        "Celery worker (solo) + Redis broker/pub-sub; API and worker threads of one process, "
        "embedded store",
    )
    if not _redis_answers(redis_url):
        result.skipped = f"no Redis answers at {redis_url}"
        return result
    workdir = Path(tempfile.mkdtemp(prefix="lrs-bench-propagation-"))
    port = free_port()
    key, secret = "bench-" + secrets.token_hex(4), secrets.token_urlsafe(18)
    store = f"bench-{secrets.token_hex(4)}"
    stats_path = workdir / "worker-stats.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRS_")}
    env.update(
        LRS_STORAGE="embedded",
        LRS_DATA_DIR=str(workdir / "data"),
        LRS_REDIS_URL=redis_url,
        LRS_DERIVATION="celery",
        LRS_ADMIN_KEY=key,
        LRS_ADMIN_SECRET=secret,
        LRS_ADMIN_STORE=store,
        LRS_PUBLIC_URL=f"http://{LOOPBACK}:{port}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    command = [
        sys.executable,
        "-m",
        "bench.propagation",
        "--serve-celery-threads",
        "--port",
        str(port),
        "--stats",
        str(stats_path),
    ]
    child = _Child(command, env, workdir / "server.log")
    try:
        child.wait_http(f"http://{LOOPBACK}:{port}/xapi/about")
        asyncio.run(
            measure(
                f"http://{LOOPBACK}:{port}", _basic(key, secret), config, redis_url, store, result
            )
        )
    finally:
        child.stop()
        with contextlib.suppress(OSError, ValueError):
            result.worker = json.loads(stats_path.read_text())
        _report_problems("celery-threads", child.text())
    return result


def run_celery_processes(config: Config, redis_url: str) -> Result:
    result = Result("celery-processes", "lrs serve + lrs worker (solo) processes, MongoDB, Redis")
    mongodb_url = os.environ.get("LRS_MONGODB_URL")
    if not mongodb_url:
        result.skipped = (
            "LRS_MONGODB_URL is not set: API and worker as separate processes need a store both "
            "can share, and the embedded store is not safe for two processes"
        )
        return result
    if not _redis_answers(redis_url):
        result.skipped = f"no Redis answers at {redis_url}"
        return result
    store = f"bench-{secrets.token_hex(4)}"
    extra = {"LRS_REDIS_URL": redis_url, "LRS_DERIVATION": "celery", "LRS_ADMIN_STORE": store}
    with Server.start("mongodb", mongodb_url=mongodb_url, extra_env=extra) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LRS_")}
        env.update(
            extra, LRS_STORAGE="mongodb", LRS_MONGODB_URL=mongodb_url, LRS_DATABASE=server.database
        )
        command = [
            sys.executable,
            "-m",
            "lrs.cli",
            "worker",
            "--pool",
            "solo",
            "--without-mingle",
            "--without-gossip",
            "-n",
            f"bench-{store}@%h",
        ]
        worker = _Child(command, env, server.workdir / "worker.log")
        try:
            worker.wait_text(" ready.")
            asyncio.run(
                measure(
                    server.base_url,
                    _basic(server.key, server.secret),
                    config,
                    redis_url,
                    store,
                    result,
                )
            )
        finally:
            worker.stop()
            _report_problems("celery-processes worker", worker.text())
    return result


def _report_problems(what: str, log: str) -> None:
    markers = ("Traceback", "ERROR", "WARNING")
    problems = [line for line in log.splitlines() if any(m in line for m in markers)]
    if problems:
        print(f"  {what} log: {len(problems)} problem line(s), e.g. {problems[0][:200]}")


class _Child:
    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
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

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready():
            if self.process.poll() is not None:
                raise BenchError(f"{what} exited ({self.process.returncode}):\n{self.text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"{what} not ready within {READY_TIMEOUT:.0f} s:\n{self.text()}")
            time.sleep(0.1)

    def wait_http(self, url: str) -> None:
        def answers() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        self._wait(answers, url)

    def wait_text(self, text: str) -> None:
        self._wait(lambda: text in self.text(), f"log line {text!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


# --- the celery-threads server process -----------------------------------------------------


def serve_celery_threads(port: int, stats_path: Path) -> int:
    """API (uvicorn, main thread) + one Celery worker thread on a private queue of the real
    Redis broker, sharing this process's embedded store; settings from the LRS_ environment."""
    import uvicorn
    from celery import signals
    from celery.contrib.testing.worker import start_worker

    from lrs.app import create_app
    from lrs.config import get_settings
    from lrs.services import build_services
    from lrs.storage.database import Database
    from workers import runtime
    from workers.celery_app import app

    settings = get_settings()
    assert settings.redis_url and settings.derivation_mode == "celery"
    queue = f"lrs-bench-{uuid.uuid4().hex[:10]}"
    broker = settings.redis_url
    if broker.startswith("unix://"):
        broker = "redis+socket://" + broker[len("unix://") :]
    app.conf.update(broker_url=broker, task_default_queue=queue, worker_hijack_root_logger=False)

    services = build_services(settings)
    api = create_app(settings, services)  # started by the lifespan; closed below
    shared = Database(services.database.kind, services.database.__getitem__)  # no close hooks
    worker_settings = settings.model_copy(update={"admin_key": None, "admin_secret": None})
    runtime.configure(lambda: build_services(worker_settings, shared))

    stats = {"tasks": 0, "statements": 0, "busy_s": 0.0, "first_start": None, "last_end": None}
    started: dict[str, float] = {}

    def prerun(task_id: str = "", **_: Any) -> None:
        started[task_id] = time.perf_counter()
        if stats["first_start"] is None:
            stats["first_start"] = time.time()

    def postrun(
        task_id: str = "", task: Any = None, args: Any = (), state: Any = None, **_: Any
    ) -> None:
        begun = started.pop(task_id, None)
        if begun is not None:
            stats["busy_s"] += time.perf_counter() - begun
        if getattr(task, "name", "") == "lrs.derive_statements" and state == "SUCCESS":
            stats["tasks"] += 1
            stats["statements"] += len(args[1])
        stats["last_end"] = time.time()

    signals.task_prerun.connect(prerun, weak=False)
    signals.task_postrun.connect(postrun, weak=False)
    # uvicorn re-raises the SIGTERM it handled once it has shut down; a Python handler keeps
    # this process alive long enough to stop the worker and write the statistics.
    signal.signal(signal.SIGTERM, lambda *_: None)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    config = uvicorn.Config(api, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    try:
        with start_worker(
            app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            queues=[queue],
            loglevel="WARNING",
            shutdown_timeout=30,
        ):
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        runtime.configure(None)
        with contextlib.suppress(Exception):
            asyncio.run(services.database.close())
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
            client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
            client.close()
        busy = stats["busy_s"]
        stats["capacity_per_s"] = round(stats["statements"] / busy, 1) if busy else 0.0
        stats["busy_s"] = round(busy, 3)
        stats_path.write_text(json.dumps(stats))
    return 0


# --- the command ---------------------------------------------------------------------------


def _print(results: list[Result], config: Config) -> None:
    print(
        f"\npropagation: {config.rate:g} statements/s offered for {config.seconds:g} s "
        f"({config.statements} statements, {config.batch_size} per POST, at most "
        f"{config.max_in_flight} POSTs in flight, {config.warmup:g} s warm-up not counted); "
        "delay = POST answered -> SSE event"
    )
    header = (
        f"{'mode':<17} {'sent/s':>7} {'acked':>6} {'POST p50':>9} {'p99':>8} {'visible':>8} "
        f"{'delay p50':>10} {'p99':>9} {'max':>9} {'derived/s':>10} {'drain s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if r.skipped:
            print(f"{r.mode:<17} skipped: {r.skipped}")
            continue
        print(
            f"{r.mode:<17} {r.sent_rate:>7.1f} {r.acked:>6} {r.post_p50_ms:>7.1f}ms "
            f"{r.post_p99_ms:>6.1f}ms {r.visible:>8} {r.delay_p50_ms:>8.1f}ms "
            f"{r.delay_p99_ms:>7.1f}ms {r.delay_max_ms:>7.1f}ms {r.visible_rate:>10.1f} "
            f"{r.drain_s:>8.3f}"
        )
    for r in results:
        if r.skipped:
            continue
        notes = [r.label]
        if r.unsent:
            notes.append(f"{r.unsent} statements not sent: every POST slot busy to the end")
        if r.errors:
            notes.append(f"{r.errors} failed POSTs")
        if r.missing:
            notes.append(f"{r.missing} acknowledged but never seen on SSE within the drain time")
        if r.before_ack:
            notes.append(f"{r.before_ack} visible before their POST answered (counted as 0 ms)")
        if r.worker:
            w = r.worker
            notes.append(
                f"worker: {w.get('tasks')} derive tasks, {w.get('statements')} statements in "
                f"{w.get('busy_s')} s of task time = capacity {w.get('capacity_per_s')} "
                "statements/s"
            )
        print(f"  {r.mode}: " + "; ".join(notes))


def _parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="python -m bench.propagation",
        description="Delay from a statement's acknowledgement to its SSE progress event "
        "(p50/p99) and derivation throughput, at a steady offered load.",
    )
    parser.add_argument("--rate", type=float, default=defaults.rate, help="statements/s")
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--warmup", type=float, default=defaults.warmup)
    parser.add_argument(
        "--mode", action="append", choices=MODES, help="repeatable; default: every mode"
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("LRS_REDIS_URL") or "redis://127.0.0.1:6379/0",
        help="Redis for the celery modes (default: LRS_REDIS_URL, else 127.0.0.1:6379/0)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--serve-celery-threads", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    return parser


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinding stops the servers this run started


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve_celery_threads:
        return serve_celery_threads(args.port, args.stats)
    signal.signal(signal.SIGTERM, _terminate)
    if args.rate <= 0 or args.seconds <= 0 or args.batch_size < 1:
        print("error: --rate and --seconds must be positive, --batch-size at least 1")
        return 2
    config = Config(
        rate=args.rate, seconds=args.seconds, batch_size=args.batch_size, warmup=args.warmup
    )
    results: list[Result] = []
    try:
        for mode in args.mode or MODES:
            print(f"running {mode} ...", flush=True)
            if mode == "embedded":
                results.append(run_embedded(config))
            elif mode == "celery-threads":
                results.append(run_celery_threads(config, args.redis_url))
            else:
                results.append(run_celery_processes(config, args.redis_url))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted; servers were stopped", file=sys.stderr)
        return 130
    _print(results, config)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"config": asdict(config), "results": [asdict(r) for r in results]}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
