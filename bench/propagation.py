"""Propagation benchmark: the delay from a statement's acknowledgement (its POST response) to
the SSE event that shows its effect on progress (design notes 6), at a steady offered load.

    python -m bench propagation           # 30 s per mode: inprocess and process 1,000/s,
                                          # celery 500/s
    python -m bench propagation --seconds 5 --mode celery --rate 200

The offered load is per mode, issue 10's targets (DEFAULT_RATES): 1,000 statements/s with
in-process derivation and with a derivation process, 500/s with one Celery worker process;
`--rate` sets one figure for all.

Modes, each on a fresh store of the back end (embedded, or MongoDB with LRS_MONGODB_URL), over
loopback HTTP, with the load generator and the SSE client in this process:
- inprocess: `lrs serve` with LRS_DERIVATION=inprocess and no Redis: derivation on a task of
             the API process, events on its in-process bus.
- process:   `lrs serve` with LRS_DERIVATION=process and no Redis: a supervisor that forks the
             API process and a derivation process beside it (lrs.derivation_process), which
             derives from the outbox; the API process learns of the new progress by polling
             the store (lrs.progress.live) and relays it as events.
- celery:    the production topology: an `lrs serve` process that enqueues Celery tasks on
             Redis, and a separate Celery worker process (solo pool) that derives and
             publishes events on Redis pub/sub, which the API relays. Both processes open the
             same store (the embedded store's SQLite file locks across processes). Their tasks
             go to a queue private to the run (see bench.celery_child), because Redis is often
             shared. Skipped, saying why, when Redis does not answer.

The workload: learners x modules (learner, module) pairs, each module with `items` content
items and no assessment. Statement n is "experienced item k" of pair n % pairs, so every
statement changes its record's `viewed` count and a pair's statements are `pairs / rate`
seconds apart. A statement (pair, k) is visible at the first SSE event for its pair whose
`viewed` is at least k; so a derivation that covers several statements at once counts for
each of them. A statement whose effect was pushed before its own POST had answered counts as
0 ms (counted in `before_ack`).

Besides the delays: statements made visible per second over the run (equals the offered load
when derivation keeps up), the peak RSS of the API process (in the process mode: summed with the
derivation process's) and of the worker process, and for the celery mode the worker's capacity:
statements derived per second of task execution time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.client import TransportError, XapiClient, basic_auth
from bench.report import RESULTS_DIR
from bench.server import BenchError, CpuReading, Server, peak_rss_bytes
from bench.stats import percentile

MODES = ("inprocess", "process", "celery")
# Statements per second offered to each mode unless a rate is given (issue 10's targets).
DEFAULT_RATES: dict[str, float] = {"inprocess": 1000.0, "process": 1000.0, "celery": 500.0}
ROOT = Path(__file__).resolve().parents[1]
VIEWED = "http://adlnet.gov/expapi/verbs/experienced"
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Config:
    rate: float | None = None  # statements per second offered in every mode; None: DEFAULT_RATES
    seconds: float = 30.0
    batch_size: int = 1  # statements per POST
    warmup: float = 2.0  # seconds of load before the measured run (other learners)
    modules: int = 5
    items: int = 20
    drain_timeout: float = 30.0  # after the last POST, how long to wait for the events
    # Requests in flight at most. An overloaded server then sees fewer statements per second
    # than offered (reported as sent/s), instead of the client queueing thousands of requests.
    max_in_flight: int = 64

    def rate_of(self, mode: str) -> float:
        """The statements per second offered to `mode`."""
        return self.rate if self.rate is not None else DEFAULT_RATES[mode]

    def statements_of(self, mode: str) -> int:
        """The statements of `mode`'s measured run."""
        return int(self.rate_of(mode) * self.seconds)

    def rates_text(self, modes: tuple[str, ...]) -> str:
        """The rates offered, for the report's header: e.g.
        `inprocess:1000,process:1000,celery:500/s`."""
        return ",".join(f"{mode}:{self.rate_of(mode):g}" for mode in modes) + "/s"

    def learners(self, statements: int) -> int:
        return max(1, math.ceil(statements / (self.modules * self.items)))


QUICK = Config(rate=100.0, seconds=3.0, warmup=1.0)


@dataclass
class Result:
    mode: str
    backend: str
    label: str
    skipped: str = ""
    error: str = ""  # why the run stopped early (its figures are then partial or zero)
    statements: int = 0
    offered_rate: float = 0.0
    sent_rate: float = 0.0  # POSTs started per second, in statements
    unsent: int = 0  # not sent within the run: every in-flight slot was taken to the end
    acked: int = 0
    errors: int = 0
    failure_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
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
    api_peak_rss: int | None = None  # bytes; process mode: API and derivation process summed
    worker_peak_rss: int | None = None  # bytes; celery mode only
    # What the server ran, when it ran several processes: for the notes (bench.server).
    processes: str = ""
    # The CPU the server used from the end of the warm-up until every acknowledged statement
    # was visible, per statement (bench.server.CpuReading; inprocess and process modes).
    cpu: str = ""
    worker: dict[str, Any] = field(default_factory=dict)
    log_problems: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return not self.skipped and self.acked > 0

    def notes(self) -> list[str]:
        """What a reader of the table should know about this row, as `key=value` strings."""
        notes = []
        if self.skipped:
            notes.append(f"skipped={self.skipped}")
        if self.error:
            notes.append(f"error={self.error}")
        if self.unsent:
            notes.append(f"unsent={self.unsent} (every POST slot busy to the end)")
        if self.errors:
            reasons = ", ".join(f"{r}: {n}" for r, n in self.failure_reasons.most_common())
            notes.append(f"failed_posts={self.errors} ({reasons or 'reason unknown'})")
        if self.missing:
            notes.append(f"never_visible={self.missing} (within {Config.drain_timeout:g} s)")
        if self.before_ack:
            notes.append(f"visible_before_ack={self.before_ack} (counted as 0 ms)")
        if self.processes:
            notes.append(self.processes)
        if self.cpu:
            notes.append(f"cpu_per_statement={self.cpu}")
        if self.worker:
            w = self.worker
            notes.append(
                f"worker_tasks={w.get('tasks')} worker_statements={w.get('statements')} "
                f"worker_busy_s={w.get('busy_s')} worker_capacity_st/s={w.get('capacity_per_s')}"
            )
        if self.log_problems:
            notes.append(f"log_problem_lines={len(self.log_problems)}: {self.log_problems[0]}")
        return notes


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
    client: XapiClient,
    batches: list[list[tuple[tuple[str, str], int, dict]]],
    config: Config,
    rate: float,
    acks: dict[tuple[tuple[str, str], int], float],
    post_latencies: list[float],
    duration: float,
    failures: collections.Counter[str] | None = None,
) -> tuple[float, int, int]:
    """Open loop: batch i is sent at start + i * batch_size / rate whatever the answers of
    earlier ones, up to `max_in_flight` requests, and nothing after `duration` seconds.
    Returns (seconds spent sending, failed requests, statements left unsent); counts each
    failure's reason (exception or status) in `failures`."""
    interval = config.batch_size / rate
    errors = 0
    tasks: set[asyncio.Task[None]] = set()
    reasons = failures if failures is not None else collections.Counter[str]()
    in_flight = asyncio.Semaphore(config.max_in_flight)

    async def send(batch: list[tuple[tuple[str, str], int, dict]]) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            response = await client.post("/xapi/statements", json=[s for _, _, s in batch])
        except TransportError as exc:
            errors += 1
            reasons[type(exc).__name__] += 1
            return
        finally:
            in_flight.release()
        answered = time.perf_counter()
        if response.status_code != 200:
            errors += 1
            reasons[f"HTTP {response.status_code}"] += 1
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
    base_url: str,
    auth: str,
    config: Config,
    redis_url: str | None,
    store: str,
    result: Result,
    cpu: Callable[[], CpuReading] | None = None,
) -> None:
    workload = Workload(config, uuid.uuid4().hex[:8])
    rate = config.rate_of(result.mode)
    headers = {"Authorization": auth, "X-Experience-API-Version": "1.0.3"}
    async with (
        XapiClient(base_url, headers, config.max_in_flight, timeout=60) as client,
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
                warm = workload.statements("warm", int(rate * config.warmup))
                await _offer(client, _batches(warm, config), config, rate, {}, [], config.warmup)
            measured = workload.statements("learner", config.statements_of(result.mode))
            before = cpu() if cpu is not None else None
            wanted = {(pair, k) for pair, k, _ in measured}
            acks: dict[tuple[tuple[str, str], int], float] = {}
            post_latencies: list[float] = []
            sent_seconds, errors, unsent = await _offer(
                client,
                _batches(measured, config),
                config,
                rate,
                acks,
                post_latencies,
                config.seconds,
                result.failure_reasons,
            )
            last_ack = max(acks.values(), default=time.perf_counter())
            deadline = time.monotonic() + config.drain_timeout
            while time.monotonic() < deadline:
                if len(_match(stream.events, set(acks))) >= len(acks):
                    break
                await asyncio.sleep(0.1)
            if before is not None and cpu is not None:
                result.cpu = before.per_statement(cpu(), len(acks))
        finally:
            await stream.stop()
    visible = _match(stream.events, wanted)
    delays = sorted(max(0.0, visible[key] - acks[key]) for key in acks if key in visible)
    first_ack = min(acks.values(), default=0.0)
    last_visible = max((visible[key] for key in acks if key in visible), default=first_ack)
    result.statements = len(measured)
    result.unsent = unsent
    result.acked = len(acks)
    result.offered_rate = rate
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


def redis_answers(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:  # noqa: BLE001 - any failure means: no Redis to use
        return False


LABELS = {
    "inprocess": "in-process derivation and events, no Redis",
    "process": "lrs serve with a derivation process beside the API process, events through "
    "the store (no Redis)",
    "celery": "lrs serve + Celery worker process (solo pool), Redis broker and pub/sub",
}


def _measure(
    server: Server,
    config: Config,
    redis_url: str | None,
    store: str,
    result: Result,
    cpu: Callable[[], CpuReading] | None = None,
) -> None:
    auth = basic_auth(server.key, server.secret)
    try:
        asyncio.run(measure(server.base_url, auth, config, redis_url, store, result, cpu))
    except (BenchError, httpx.HTTPError, TimeoutError) as exc:
        # Kept in the result, so the table still shows the other modes and back ends; the
        # processes' peak RSS is still read by the caller.
        result.error = _one_line(exc)


def _one_line(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}").replace("\n", " ")[:300]


def run_without_redis(config: Config, result: Result, mongodb_url: str | None = None) -> None:
    """The inprocess and process modes: `lrs serve` alone, LRS_DERIVATION set to the mode
    (explicitly: `auto` would pick either, depending on the machine)."""
    extra = {"LRS_DERIVATION": result.mode}
    log_copy = RESULTS_DIR / f"propagation-{result.mode}-{result.backend}.server.log"
    with Server.start(
        result.backend, mongodb_url=mongodb_url, extra_env=extra, keep_log=log_copy
    ) as server:
        if server.processes > 1:
            result.processes = server.processes_note(f"api-{result.mode} peak RSS")
        _measure(server, config, None, "default", result, lambda: CpuReading.now(server))
        # Read before the server stops: VmHWM disappears with the process (summed over the
        # supervisor's children in the process mode: the API and the derivation process).
        result.api_peak_rss = server.peak_rss_bytes()
        result.log_problems = server.problems()


def run_celery(
    config: Config, result: Result, redis_url: str, mongodb_url: str | None = None
) -> None:
    if not redis_answers(redis_url):
        result.skipped = f"no Redis answers at {redis_url}"
        return
    queue = f"lrs-bench-{uuid.uuid4().hex[:10]}"
    store = f"bench-{secrets.token_hex(4)}"
    extra = {
        "LRS_REDIS_URL": redis_url,
        "LRS_DERIVATION": "celery",
        "LRS_ADMIN_STORE": store,
        # `python -m bench.celery_child` from the server's temporary working directory.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    launcher = [sys.executable, "-m", "bench.celery_child", "api", queue, "--"]
    try:
        with Server.start(
            result.backend, mongodb_url=mongodb_url, extra_env=extra, launcher=launcher
        ) as server:
            stats_path = server.workdir / "worker-stats.json"
            command = [sys.executable, "-m", "bench.celery_child", "worker", queue, str(stats_path)]
            # The server's own environment: same store (data directory or database), same Redis.
            worker = _Child(command, server.env, server.workdir / "worker.log")
            try:
                worker.wait_text(" ready.")
                _measure(server, config, redis_url, store, result)
                result.api_peak_rss = server.peak_rss_bytes()
                result.worker_peak_rss = worker.peak_rss_bytes()
            finally:
                # The worker first: it may still be writing to the store the server drops.
                worker.stop()
                with contextlib.suppress(OSError, ValueError):
                    result.worker = json.loads(stats_path.read_text())
                result.log_problems = server.problems() + [
                    "worker: " + line for line in _problems(worker.text())
                ]
    finally:
        drop_queue(redis_url, queue)


def run(
    config: Config,
    backend: str,
    modes: tuple[str, ...] = MODES,
    mongodb_url: str | None = None,
    redis_url: str = "redis://127.0.0.1:6379/0",
    results: list[Result] | None = None,
) -> list[Result]:
    """Every mode in `modes` on `backend`; results are appended to `results` as they finish,
    so that the caller keeps the finished ones when a later mode is interrupted."""
    results = [] if results is None else results
    for mode in modes:
        print(f"[propagation] {backend} {mode} running ...", file=sys.stderr, flush=True)
        result = Result(mode, backend, LABELS[mode])
        results.append(result)
        try:
            if mode in ("inprocess", "process"):
                run_without_redis(config, result, mongodb_url)
            else:
                run_celery(config, result, redis_url, mongodb_url)
        except BenchError as exc:  # e.g. a server that does not start: the next mode may
            result.error = _one_line(exc)
        print(
            f"[propagation] {backend} {mode} done: delay p50 {result.delay_p50_ms:.0f} ms, "
            f"p99 {result.delay_p99_ms:.0f} ms {' '.join(result.notes())}",
            file=sys.stderr,
            flush=True,
        )
    return results


def _problems(log: str) -> list[str]:
    markers = ("Traceback", "ERROR", "WARNING", "CRITICAL")
    return [line[:300] for line in log.splitlines() if any(m in line for m in markers)]


def drop_queue(redis_url: str, queue: str) -> None:
    """Remove the run's private queue from the shared Redis (sweeps may have refilled it)."""
    try:
        import redis

        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        try:
            client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - best effort clean-up
        print(f"warning: could not delete Redis queue {queue}: {exc}", file=sys.stderr)


class _Child:
    """A helper process with its output in a log file, stopped like a container runtime would."""

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
                start_new_session=True,  # Ctrl-C reaches the bench only, which stops us
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def peak_rss_bytes(self) -> int | None:
        return peak_rss_bytes(self.process.pid) if self.process.poll() is None else None

    def wait_text(self, text: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while text not in self.text():
            if self.process.poll() is not None:
                raise BenchError(f"worker exited ({self.process.returncode}):\n{self.text()}")
            if time.monotonic() > deadline:
                raise BenchError(f"worker not ready within {READY_TIMEOUT:.0f} s:\n{self.text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # Celery's warm shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


if __name__ == "__main__":
    from bench.__main__ import main

    sys.exit(main(["propagation", *sys.argv[1:]]))
