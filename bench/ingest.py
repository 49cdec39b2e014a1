"""Ingestion benchmark: grow a fresh store to `statements` statements over HTTP (batched, then
the last `singles` one per request), then time the common filtered GETs on it.

Phases (fixed names and order, see `bench.report`):
- post-batch-<n>          POST arrays of n statements             statements/s
- post-single             POST one statement per request          statements/s
- get-all                 GET /xapi/statements, no filter         requests/s
- get-<filter>            one filter: agent, verb, activity, registration,
                          related-activities (activity + related_activities=true),
                          related-agents (agent + related_agents=true), since, until
- get-paging              first page, then follow `more`          requests/s (every page counts)
- scan-limit-1000         read the whole store, 1000 a page       requests/s (also counts it)
Figures per phase: requests made, statements sent (POST) or returned (GET), rate, latency
percentiles per request (nearest rank). The server's peak RSS is read before it stops (summed
over the API processes and the derivation process when `lrs serve` runs several).

The server is a default `lrs serve` without Redis: `derivation` (LRS_DERIVATION, `auto` unless
given) decides who derives, in the API process or in a derivation process beside it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bench.client import (
    BacklogUnknown,
    XapiClient,
    check,
    derivation_backlog,
    json_body,
    xapi_client,
)
from bench.data import VERBS, Corpus, generate
from bench.report import RESULTS_DIR
from bench.server import BenchError, CpuReading, Server
from bench.stats import PhaseResult, Recorder, measure, measure_self_timed

BENCHMARK = "ingest"
# The GET phases, in the order they run and are reported (rows of the `query` section).
QUERY_PHASES = (
    "get-all",
    "get-agent",
    "get-verb",
    "get-activity",
    "get-registration",
    "get-related-activities",
    "get-related-agents",
    "get-since",
    "get-until",
    "get-paging",
    "scan-limit-1000",
)
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class IngestConfig:
    statements: int = 100_000  # the store's final size; the last `singles` are sent one by one
    singles: int = 1_000
    concurrency: int = 8
    queries: int = 200
    batch_size: int = 100
    pages: int = 3  # pages read per get-paging job (the first + following `more`)
    # Before the GET phases, wait at most this long for in-process derivation to catch up.
    settle_seconds: float = 900.0
    seed: int = 42
    # Per-phase time budget (None: every phase runs all its requests). With a budget a slow
    # phase reports what it managed in that time, so the whole table still comes out. Not
    # applied to the batch phase (it builds the data set) nor to the scan (it counts it).
    phase_seconds: float | None = None

    @property
    def batched(self) -> int:
        return self.statements - self.singles


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
    # ... and right after the batches, before the single POSTs (which give it time to shrink)
    backlog_after_batches: str = "unknown"
    backlog: str = "unknown"  # derivation backlog the server reported after the last phase
    settle_seconds: str = "not waited"  # from the end of the POSTs until nothing was owed
    # Per POST phase: the CPU the server and the client used during it, per statement.
    cpu: dict[str, str] = field(default_factory=dict)
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
    client: XapiClient,
    config: IngestConfig,
    statements: list[dict[str, Any]],
    state: State,
    cpu: Callable[[], CpuReading],
) -> None:
    """The two POST phases (`cpu` reads the CPU used so far, before and after each)."""
    size = config.batch_size
    batched = statements[: config.batched]
    singles = statements[config.batched :]
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
    before = cpu()
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
    state.cpu[batch_phase] = before.per_statement(cpu(), state.phases[-1].statements)
    state.since.append(_timestamp(datetime.now(UTC)))
    state.backlog_after_batches = await _backlog(client)
    if single_bodies:
        before = cpu()
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
        state.cpu["post-single"] = before.per_statement(cpu(), state.phases[-1].statements)


async def _queries(
    client: XapiClient,
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

    def related_agent(agent: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
        # The generated statements name learners only as actors; the authority (the bench's
        # credential) is never a learner, so the actor is the only place a match can come from.
        return by_agent(agent)

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
            "get-related-agents",
            (
                ({"agent": json.dumps(_ifi(a)), "related_agents": "true"}, related_agent(a))
                for a in _cycle(corpus.learners, n, rng)
            ),
        ),
        (
            "get-since",
            (({"since": t}, lambda s, t=t: s["stored"] > t) for t in _cycle(state.since, n, rng)),
        ),
        (
            "get-until",
            (
                ({"until": t}, lambda s, t=t: s["stored"] <= t)
                # Not the moment before the first POST: nothing was stored until then.
                for t in _cycle(state.since[1:], n, rng)
            ),
        ),
    ]
    # The report's rows are QUERY_PHASES: a phase added here must be added there too.
    assert [name for name, _ in plans] == list(QUERY_PHASES[:-2]), "QUERY_PHASES out of date"

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


async def _scan(client: XapiClient, state: State) -> PhaseResult:
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
        await _ingest(client, config, statements, state, lambda: CpuReading.now(server))
        state.backlog_after_ingest = await _backlog(client)
        state.settle_seconds = await _settle(client, config.settle_seconds, state)
        await _queries(client, config, corpus, state)
        scan = await _scan(client, state)
        state.done(scan, scan.requests)
        state.backlog = await _backlog(client)


async def _settle(client: XapiClient, limit: float, state: State) -> str:
    """Wait until the server owes no derivation (at most `limit` seconds): every stored
    statement derived, and every discovered module that grew summarized again (the corpus's
    modules are discovered, and a re-summary rewrites all of a module's records). So the GET
    phases measure a store at rest rather than one still busy with a backlog of unknown size:
    the figures of two runs then compare. Returns the time it took."""
    started = time.perf_counter()
    word = 0.0  # when to say something next: a large backlog takes minutes
    while True:
        try:
            backlog = await derivation_backlog(client)
            owed: int | None = backlog.owed
            said = f"{backlog.underived} underived, {backlog.resummaries} re-summaries owed"
        except BacklogUnknown as exc:
            owed, said = None, f"unknown ({str(exc)[:80]})"
        waited = time.perf_counter() - started
        if owed == 0:
            return f"{waited:.1f}"
        if waited >= limit:
            return f"gave_up_after_{waited:.0f}s (backlog {said})"
        if waited >= word:
            word += 30.0
            print(
                f"[{BENCHMARK}] {state.backend} waiting for derivation to catch up: {said}",
                file=sys.stderr,
                flush=True,
            )
        await asyncio.sleep(1.0)


async def _backlog(client: XapiClient) -> str:
    """Statements stored but not yet derived into progress, from /ready (best effort: the
    endpoint may be missing or slow). Derivation runs in the background of the same server,
    so a backlog means the ingest figures were partly paid for later."""
    try:
        backlog = await derivation_backlog(client)
    except BacklogUnknown as exc:
        return f"unknown ({str(exc)[:80]})"
    return f"{backlog.underived} (lag {backlog.lag_seconds}s)"


@dataclass
class IngestOutcome:
    """What one run produced, filled in as it goes: the caller holds it, so an interrupted or
    failed run still reports the phases that finished."""

    backend: str
    phases: list[PhaseResult] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    api_peak_rss: int | None = None  # bytes, the server's VmHWM just before it stopped
    # What the server ran, once it started: "processes ..." for the notes (bench.server).
    processes: str = ""
    error: str = ""  # why the run stopped early
    log_problems: list[str] = field(default_factory=list)


def run(
    config: IngestConfig,
    backend: str,
    mongodb_url: str | None = None,
    outcome: IngestOutcome | None = None,
    log_name: str = BENCHMARK,
    workers: int = 1,
    derivation: str = "auto",
) -> IngestOutcome:
    """Run the benchmark on a fresh server of `backend` (`workers` API processes,
    LRS_DERIVATION=`derivation`), filling `outcome`.

    The server is stopped either way. A BenchError (server did not start, a request failed) is
    recorded in `outcome.error`; Ctrl-C is recorded too, then propagates.
    """
    outcome = IngestOutcome(backend) if outcome is None else outcome
    corpus, statements = generate(config.seed, config.statements)
    # The generated data set is hundreds of MB of small objects that live to the end: left to
    # the collector, each full collection of this (client) process walks them all and stalls
    # every request in flight for a few hundred ms, which the latency figures then blame on
    # the server. Frozen, the collector skips them.
    gc.collect()
    gc.freeze()
    log_copy = RESULTS_DIR / f"{log_name}-{backend}.server.log"
    state = State(backend, budget=config.phase_seconds)
    outcome.phases = state.phases  # the same list: phases appear in the outcome as they finish
    started = time.perf_counter()
    try:
        with Server.start(
            backend,
            mongodb_url=mongodb_url,
            extra_env={"LRS_DERIVATION": derivation},
            keep_log=log_copy,
            workers=workers,
        ) as server:
            outcome.processes = server.processes_note("api-ingest peak RSS")
            try:
                asyncio.run(_run_phases(server, config, corpus, statements, state))
            except (BenchError, KeyboardInterrupt) as exc:
                where = f"during {state.aborted}: " if state.aborted else ""
                outcome.error = (where + (str(exc) or type(exc).__name__)).replace("\n", " ")
                outcome.error = outcome.error[:300]
                if isinstance(exc, KeyboardInterrupt):
                    raise
            finally:
                # Read before the server stops: VmHWM disappears with the process.
                outcome.api_peak_rss = server.peak_rss_bytes()
                data_bytes = server.data_bytes()
                # Timed because a graceful stop waits for background derivation to drain.
                stopping = time.perf_counter()
                server.stop()
                state.shutdown_seconds = round(time.perf_counter() - stopping, 1)
                outcome.log_problems = server.problems()
                outcome.summary = _summary(config, state, backend, data_bytes, started)
    except BenchError as exc:  # the server did not start
        outcome.error = str(exc).replace("\n", " ")[:300]
    return outcome


def _summary(
    config: IngestConfig, state: State, backend: str, data_bytes: int, started: float
) -> dict[str, Any]:
    """The run's facts besides the timed phases, as `key=value` pairs (stable keys)."""
    scan = next((p for p in state.phases if p.phase == "scan-limit-1000"), None)
    checks = state.checks
    stored = scan.statements if scan else None
    return {
        "statements_sent": state.sent,
        "statements_acknowledged": state.acknowledged,
        "statements_stored": stored if stored is not None else "not scanned",
        # A fast but lossy store is not a result: every statement sent must come back.
        "store_check": "ok"
        if stored == state.acknowledged == state.sent == config.statements
        else f"MISMATCH planned={config.statements} sent={state.sent} "
        f"acknowledged={state.acknowledged} scanned={stored}",
        "store_on_disk_mb": round(data_bytes / 2**20, 1) if backend == "embedded" else "n/a",
        "concurrency": config.concurrency,
        "seed": config.seed,
        "phase_seconds": config.phase_seconds if config.phase_seconds is not None else "unlimited",
        "phases_cut_by_budget": ",".join(state.cut) or "none",
        "run_seconds": round(time.perf_counter() - started, 1),
        **{f"cpu_per_statement_{phase}": text for phase, text in state.cpu.items()},
        "derivation_backlog_after_batches": state.backlog_after_batches,
        "derivation_backlog_after_ingest": state.backlog_after_ingest,
        "derivation_settle_seconds": state.settle_seconds,
        "derivation_backlog_at_end": state.backlog,
        "server_shutdown_seconds": state.shutdown_seconds,
        "empty_responses": ",".join(f"{k}:{v}" for k, v in checks.empty.items()) or "none",
        "filter_mismatches": ",".join(f"{k}:{v}" for k, v in checks.mismatched.items()) or "none",
    }
