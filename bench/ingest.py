"""Ingestion benchmark: batched and single POSTs, then the common filtered GETs.

Phases (fixed names, see `bench.report`):
- post-batch-<n>         POST arrays of n statements           statements/s
- post-single            POST one statement per request        statements/s
- get-<filter>           GET /xapi/statements with one filter  requests/s
- get-paging             first page, then follow `more`        requests/s (every page counts)
- scan-limit-1000        read the whole store, 1000 a page     requests/s (also counts the store)
Columns: `requests` made, `statements` sent (POST phases) or returned (GET phases), `rate` in
`unit`, latency percentiles per request (nearest rank).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.client import check, json_body, xapi_client
from bench.data import VERBS, Corpus, generate
from bench.report import RESULTS_DIR, table, write_json
from bench.server import BenchError, Server
from bench.stats import PhaseResult, Recorder, measure, measure_self_timed

BENCHMARK = "ingest"
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class IngestConfig:
    statements: int = 20_000
    singles: int = 1_000
    concurrency: int = 8
    queries: int = 200
    batch_size: int = 100
    pages: int = 3  # pages read per get-paging job (the first + following `more`)
    seed: int = 42
    # Per-phase time budget (None: every phase runs all its requests). With a budget a slow
    # phase reports what it managed in that time, so the whole table still comes out. Not
    # applied to the batch phase (it builds the data set) nor to the scan (it counts it).
    phase_seconds: float | None = None


QUICK = IngestConfig(statements=1_000, singles=100, queries=10)


@dataclass
class Checks:
    """Correctness signals gathered on the way; a fast but wrong answer is not a result."""

    empty: dict[str, int] = field(default_factory=dict)  # responses with no statements
    mismatched: dict[str, int] = field(default_factory=dict)  # statements the filter excludes

    def note(self, phase: str, statements: list[dict[str, Any]], ok: Callable[..., bool]) -> None:
        if not statements:
            self.empty[phase] = self.empty.get(phase, 0) + 1
        bad = sum(1 for s in statements if not ok(s))
        if bad:
            self.mismatched[phase] = self.mismatched.get(phase, 0) + bad


@dataclass
class State:
    """What a run has produced so far; kept outside the phases so that a failed or interrupted
    run can still report the phases that finished."""

    backend: str
    phases: list[PhaseResult] = field(default_factory=list)
    checks: Checks = field(default_factory=Checks)
    sent: int = 0  # statements POSTed (fewer than planned when a time budget cut a phase)
    acknowledged: int = 0  # statement ids the server returned for POSTs
    since: list[str] = field(default_factory=list)  # `since` values inside the ingest window
    backlog_after_ingest: str = "unknown"  # derivation backlog right after the POST phases
    backlog: str = "unknown"  # derivation backlog the server reported after the last phase
    shutdown_seconds: float | None = None

    cut: list[str] = field(default_factory=list)  # phases stopped by the time budget
    aborted: str | None = None  # the phase that was running when the run failed or stopped
    budget: float | None = None

    def done(self, result: PhaseResult, planned: int) -> None:
        self.phases.append(result)
        if result.requests < planned:
            self.cut.append(f"{result.phase}:{result.requests}/{planned}")
        self._say(result, "done")

    def abort(self, result: PhaseResult) -> None:
        # The figures of the phase in progress are kept, but named so nobody mistakes them.
        self.aborted = result.phase
        self.phases.append(replace(result, phase=result.phase + "(aborted)"))

    def progress(self, result: PhaseResult) -> None:
        self._say(result, "running")

    def _say(self, result: PhaseResult, what: str) -> None:
        # Progress on stderr, so a long run shows where it is without disturbing the table.
        print(
            f"[{BENCHMARK}] {self.backend} {result.phase} {what}: {result.requests} requests "
            f"in {result.seconds:.1f}s ({result.rate:.1f} {result.unit}, "
            f"p50 {result.p50_ms:.0f} ms)",
            file=sys.stderr,
            flush=True,
        )

    def options(self) -> dict[str, Any]:
        """Keyword options for `measure`: time budget, abort and progress reporting."""
        return {"budget": self.budget, "on_abort": self.abort, "on_progress": self.progress}


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ifi(agent: dict[str, Any]) -> dict[str, Any]:
    """The agent as a query parameter: identifier only, as clients send it."""
    key = "mbox" if "mbox" in agent else "account"
    return {"objectType": "Agent", key: agent[key]}


def _cycle(values: list[Any], count: int, rng: random.Random) -> Iterator[Any]:
    """`count` picks from `values`, in a seeded random order (so no cache sees a pattern)."""
    for _ in range(count):
        yield rng.choice(values)


async def _ingest(
    client: httpx.AsyncClient,
    config: IngestConfig,
    statements: list[dict[str, Any]],
    state: State,
) -> None:
    """The two POST phases."""
    size = config.batch_size
    batched = statements[: config.statements]
    singles = statements[config.statements :]
    # Serialise before timing, so the client's JSON encoding is not part of the figures.
    batch_bodies = [
        (json.dumps(batched[i : i + size]).encode(), len(batched[i : i + size]))
        for i in range(0, len(batched), size)
    ]
    single_bodies = [(json.dumps(s).encode(), 1) for s in singles]
    state.since.append(_timestamp(datetime.now(UTC)))
    halfway = len(batch_bodies) // 2

    async def post(body: bytes, what: str, count: int) -> int:
        state.sent += count
        response = check(await client.post("/xapi/statements", content=body, headers=_JSON), what)
        ids = json_body(response, what)
        state.acknowledged += len(ids)
        # One mid-ingest moment, so `since` queries also cut through the batched data.
        if what != "post-single" and state.acknowledged == halfway * size:
            state.since.append(_timestamp(datetime.now(UTC)))
        return len(ids)

    batch_phase = f"post-batch-{size}"
    state.done(
        await measure(
            batch_phase,
            "statements/s",
            batch_bodies,
            lambda job: post(job[0], batch_phase, job[1]),
            config.concurrency,
            # No budget: this phase builds the data set every later phase is measured on.
            **{**state.options(), "budget": None},
        ),
        len(batch_bodies),
    )
    state.since.append(_timestamp(datetime.now(UTC)))
    if single_bodies:
        state.done(
            await measure(
                "post-single",
                "statements/s",
                single_bodies,
                lambda job: post(job[0], "post-single", job[1]),
                config.concurrency,
                **state.options(),
            ),
            len(single_bodies),
        )


async def _queries(
    client: httpx.AsyncClient,
    config: IngestConfig,
    corpus: Corpus,
    state: State,
) -> None:
    rng = random.Random(config.seed + 1)
    n = config.queries
    checks = state.checks

    def by_agent(agent: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
        key = "mbox" if "mbox" in agent else "account"
        return lambda s: s["actor"].get(key) == agent[key]

    def related(course: str) -> Callable[[dict[str, Any]], bool]:
        def ok(s: dict[str, Any]) -> bool:
            parents = (s.get("context") or {}).get("contextActivities", {}).get("parent", [])
            return s["object"].get("id") == course or any(p["id"] == course for p in parents)

        return ok

    # phase -> (parameter sets, the property every returned statement must have)
    plans: list[tuple[str, Iterator[tuple[dict[str, str], Callable[..., bool]]]]] = [
        ("get-all", (({}, lambda s: True) for _ in range(n))),
        (
            "get-agent",
            (
                ({"agent": json.dumps(_ifi(a))}, by_agent(a))
                for a in _cycle(corpus.learners, n, rng)
            ),
        ),
        (
            "get-verb",
            (
                ({"verb": v}, lambda s, v=v: s["verb"]["id"] == v)
                for v in _cycle(list(VERBS.values()), n, rng)
            ),
        ),
        (
            "get-activity",
            (
                ({"activity": a}, lambda s, a=a: s["object"].get("id") == a)
                for a in _cycle([a["id"] for a in corpus.activities], n, rng)
            ),
        ),
        (
            "get-registration",
            (
                ({"registration": r}, lambda s, r=r: s["context"]["registration"] == r)
                for r in _cycle(corpus.used_registrations, n, rng)
            ),
        ),
        (
            "get-related-activities",
            (
                ({"activity": c, "related_activities": "true"}, related(c))
                for c in _cycle([c["id"] for c in corpus.courses], n, rng)
            ),
        ),
        (
            "get-since",
            (({"since": t}, lambda s, t=t: s["stored"] > t) for t in _cycle(state.since, n, rng)),
        ),
    ]

    for phase, jobs in plans:

        async def get(job: tuple[dict[str, str], Callable[..., bool]], phase: str = phase) -> int:
            params, ok = job
            response = check(await client.get("/xapi/statements", params=params), phase)
            found = json_body(response, phase)["statements"]
            checks.note(phase, found, ok)
            return len(found)

        state.done(
            await measure(phase, "requests/s", jobs, get, config.concurrency, **state.options()),
            n,
        )

    async def paging(_: int, recorder: Recorder) -> None:
        url = "/xapi/statements"
        for page in range(config.pages):
            started = time.perf_counter()
            response = check(await client.get(url), "get-paging")
            body = json_body(response, "get-paging")
            recorder.add(time.perf_counter() - started, len(body["statements"]))
            checks.note("get-paging", body["statements"], lambda s: True)
            if not body["more"]:
                if page < config.pages - 1:
                    checks.empty["get-paging(more missing)"] = (
                        checks.empty.get("get-paging(more missing)", 0) + 1
                    )
                return
            url = body["more"]  # a path relative to the server root, as the spec allows

    state.done(
        await measure_self_timed(
            "get-paging", "requests/s", range(n), paging, config.concurrency, **state.options()
        ),
        n * config.pages,
    )


async def _scan(client: httpx.AsyncClient, state: State) -> PhaseResult:
    """Read every statement once, 1000 a page, following `more` (one client, sequential)."""

    async def scan(_: int, recorder: Recorder) -> None:
        url = "/xapi/statements?limit=1000"
        seen: set[str] = set()
        while url:
            started = time.perf_counter()
            response = check(await client.get(url), "scan-limit-1000")
            body = json_body(response, "scan-limit-1000")
            recorder.add(time.perf_counter() - started, len(body["statements"]))
            fresh = {s["id"] for s in body["statements"]}
            if fresh & seen:
                raise BenchError("scan-limit-1000: paging returned a statement twice")
            seen |= fresh
            url = body["more"]

    # No budget: the scan also counts the store, which needs every page.
    options = {**state.options(), "budget": None}
    return await measure_self_timed("scan-limit-1000", "requests/s", range(1), scan, 1, **options)


async def _run_phases(
    server: Server,
    config: IngestConfig,
    corpus: Corpus,
    statements: list[dict[str, Any]],
    state: State,
) -> None:
    async with xapi_client(server, config.concurrency) as client:
        await _ingest(client, config, statements, state)
        state.backlog_after_ingest = await _backlog(client)
        await _queries(client, config, corpus, state)
        scan = await _scan(client, state)
        state.done(scan, scan.requests)
        state.backlog = await _backlog(client)


async def _backlog(client: httpx.AsyncClient) -> str:
    """Statements stored but not yet derived into progress, from /ready (best effort: the
    endpoint may be missing or slow). Derivation runs in the background of the same server,
    so a backlog means the ingest figures were partly paid for later."""
    try:
        response = await client.get("/ready", timeout=30.0)
        backlog = response.json()["checks"]["backlog"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return f"unknown ({type(exc).__name__})"
    if not backlog.get("ok", True) or "underived" not in backlog:
        # The server's own probe gives up after a couple of seconds when the store is busy.
        return f"unknown ({str(backlog.get('error', 'no figure'))[:80]})"
    return f"{backlog['underived']} (lag {backlog['derivation_lag_seconds']}s)"


def run(
    config: IngestConfig,
    backend: str,
    mongodb_url: str | None = None,
    results_name: str = BENCHMARK,
) -> dict[str, Any]:
    """Run the benchmark on a fresh server of `backend`; print the table, write the JSON.

    On an error or Ctrl-C the phases that finished are still printed and saved (marked
    incomplete), then the exception propagates; the server is stopped either way.
    """
    total = config.statements + config.singles
    corpus, statements = generate(config.seed, total)
    log_copy = RESULTS_DIR / f"{results_name}-{backend}.server.log"
    state = State(backend, budget=config.phase_seconds)
    started = time.perf_counter()
    incomplete: str | None = None
    with Server.start(backend, mongodb_url=mongodb_url, keep_log=log_copy) as server:
        try:
            asyncio.run(_run_phases(server, config, corpus, statements, state))
        except (BenchError, KeyboardInterrupt) as exc:
            incomplete = str(exc) or type(exc).__name__
            raise
        finally:
            # Read before the server stops: VmHWM disappears with the process.
            rss = server.peak_rss_bytes()
            data_bytes = server.data_bytes()
            # Timed because a graceful stop waits for background derivation to drain.
            stopping = time.perf_counter()
            server.stop()
            state.shutdown_seconds = round(time.perf_counter() - stopping, 1)
            problems = server.problems()
            summary = _report(
                config,
                state,
                backend,
                rss,
                data_bytes,
                problems,
                log_copy,
                started,
                incomplete,
                results_name,
            )
    return summary


def _report(
    config: IngestConfig,
    state: State,
    backend: str,
    rss: int | None,
    data_bytes: int,
    problems: list[str],
    log_copy: Path,
    started: float,
    incomplete: str | None,
    results_name: str,
) -> dict[str, Any]:
    scan = next((p for p in state.phases if p.phase == "scan-limit-1000"), None)
    checks = state.checks
    summary: dict[str, Any] = {
        "statements_sent": state.sent,
        "statements_acknowledged": state.acknowledged,
        "statements_stored": scan.statements if scan else "not scanned",
        "peak_rss_mb": round(rss / 2**20, 1) if rss is not None else "unknown",
        "store_on_disk_mb": round(data_bytes / 2**20, 1) if backend == "embedded" else "n/a",
        "concurrency": config.concurrency,
        "seed": config.seed,
        "phase_seconds": config.phase_seconds if config.phase_seconds is not None else "unlimited",
        "phases_cut_by_budget": ",".join(state.cut) or "none",
        "total_seconds": round(time.perf_counter() - started, 1),
        "server_log_problem_lines": len(problems),
        "derivation_backlog_after_ingest": state.backlog_after_ingest,
        "derivation_backlog_at_end": state.backlog,
        "server_shutdown_seconds": state.shutdown_seconds,
        "empty_responses": ",".join(f"{k}:{v}" for k, v in checks.empty.items()) or "none",
        "filter_mismatches": ",".join(f"{k}:{v}" for k, v in checks.mismatched.items()) or "none",
    }
    if incomplete is not None:
        where = f"during {state.aborted}: " if state.aborted else ""
        summary["incomplete"] = (where + incomplete.replace("\n", " "))[:300]
    print(table(BENCHMARK, backend, state.phases, summary), flush=True)
    if problems:
        print(f"server log ({log_copy}) problem lines, first 10:", *problems[:10], sep="\n  ")
    if scan and not (scan.statements == state.acknowledged == state.sent):
        print(
            f"warning: sent {state.sent} statements, {state.acknowledged} acknowledged, "
            f"{scan.statements} found by the scan"
        )
    path = write_json(
        results_name,
        backend,
        {
            "complete": incomplete is None,
            "config": asdict(config),
            "phases": [p.as_dict() for p in state.phases],
            "summary": summary,
            "server_log_problems": problems[:50],
        },
    )
    print(f"[{BENCHMARK}] {backend.ljust(9)} {'summary'.ljust(24)} results_file={path}")
    return summary


def quick_config(**overrides: Any) -> IngestConfig:
    return replace(QUICK, **{k: v for k, v in overrides.items() if v is not None})


def full_config(**overrides: Any) -> IngestConfig:
    return replace(IngestConfig(), **{k: v for k, v in overrides.items() if v is not None})
