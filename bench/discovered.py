"""Discovered-modules scenario (issue 10): statements that each bring a NEW item into one of
five modules the LRS discovers (no course definition), POSTed in batches, then the time until
the server has derived all of them, and whether its memory stays flat meanwhile.

    python -m bench discovered                              # 50,000 statements
    python -m bench discovered --discovered-statements 5000

On a fresh store of the back end, a default `lrs serve` without Redis (`--derivation`: who
derives, `auto` unless given: in the API process or in a derivation process beside it;
`--workers N` for N API processes on the store). Statement n:
- object: a new activity `<course>/m<n % 5>/item<n>`, verb experienced;
- context.contextActivities.parent = [module n % 5], grouping = [the course], which is how the
  LRS discovers the module and the item (lrs.progress.discovery);
- actor: learner (n // 5) % learners, so every learner works in every module;
- timestamps increasing with n.

Figures (one row per back end, see `bench.report`): the POST phase (batches of `batch_size` at
`concurrency` requests in flight: seconds, statements/s, latency per request), `drain_s` from
the last acknowledged POST until GET /ready reports nothing owed: no underived statement and no
grown module whose records still show its old item count (polled; `-` when it gave up after
`drain_timeout`; until 2026-12-01 it waited for the statements only, and the records' item
counts could still be catching up), and the API's RSS when it had started, right after the POSTs,
once drained, and its peak until then (summed over the API processes and the derivation process
when `lrs serve` runs several; until 2026-12-01 the peak was read as the server stopped, so it
included the check's own GETs: that figure is now the note `peak_rss_with_check_mib`). Then
a check of the derived progress (in the notes, never failing the run): every (learner, module)
record's `items_total` and `viewed` against what was sent.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bench.client import (
    BacklogUnknown,
    XapiClient,
    check,
    derivation_backlog,
    json_body,
    xapi_client,
)
from bench.report import RESULTS_DIR, log_problems_note
from bench.server import BenchError, CpuReading, Server
from bench.stats import PhaseResult, measure

BENCHMARK = "discovered"
MODULES = 5  # part of the row name: fixed
ROW = f"discovered-{MODULES}-modules"
VERB = "http://adlnet.gov/expapi/verbs/experienced"
_JSON = {"Content-Type": "application/json"}
_BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: statement times, not the clock


@dataclass(frozen=True)
class DiscoveredConfig:
    statements: int = 50_000
    batch_size: int = 500
    concurrency: int = 8
    learners: int = 200
    drain_timeout: float = 600.0  # after the last POST, how long to wait for the derivation
    poll_interval: float = 0.25  # between two GET /ready while draining


QUICK = DiscoveredConfig(statements=2_000)


class Workload:
    """The statements of one run, on a course of its own, and what progress they must give."""

    def __init__(self, config: DiscoveredConfig, tag: str) -> None:
        self.config = config
        self.course = f"http://example.com/bench/{tag}/course"
        self.modules = [f"{self.course}/m{j}" for j in range(MODULES)]
        self.tag = tag

    def mbox(self, learner: int) -> str:
        return f"mailto:learner{learner}-{self.tag}@example.com"

    def statement(self, n: int) -> dict[str, Any]:
        module = self.modules[n % MODULES]
        learner = (n // MODULES) % self.config.learners
        at = _BASE_MS + n * 10
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at // 1000))
        return {
            "actor": {"objectType": "Agent", "mbox": self.mbox(learner)},
            "verb": {"id": VERB, "display": {"en-US": "experienced"}},
            "object": {"objectType": "Activity", "id": f"{module}/item{n}"},
            "context": {
                "contextActivities": {
                    "parent": [{"objectType": "Activity", "id": module}],
                    "grouping": [{"objectType": "Activity", "id": self.course}],
                }
            },
            "timestamp": f"{stamp}.{at % 1000:03d}Z",
        }

    def bodies(self) -> list[tuple[bytes, int]]:
        """The POST bodies (serialised before timing) and their statement counts."""
        size, total = self.config.batch_size, self.config.statements
        return [
            (
                json.dumps([self.statement(n) for n in range(i, min(i + size, total))]).encode(),
                min(size, total - i),
            )
            for i in range(0, total, size)
        ]

    def expected(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        """(items per module, statements viewed per (learner key, module))."""
        items = {module: 0 for module in self.modules}
        viewed: dict[tuple[str, str], int] = {}
        for n in range(self.config.statements):
            module = self.modules[n % MODULES]
            learner = f"mbox:{self.mbox((n // MODULES) % self.config.learners)}"
            items[module] += 1
            viewed[(learner, module)] = viewed.get((learner, module), 0) + 1
        return items, viewed


@dataclass
class DiscoveredOutcome:
    """What one run produced, filled in as it goes (an interrupted run keeps what finished)."""

    backend: str
    post: PhaseResult | None = None
    acknowledged: int = 0
    drain_s: float | None = None  # None: not drained (gave up, failed or interrupted)
    drain: str = "not measured"  # how the drain ended, for the notes
    rss_start: int | None = None  # bytes (summed over the supervisor's children, if any)
    rss_after_post: int | None = None
    rss_end: int | None = None
    peak_rss: int | None = None  # of the scenario: read once drained, before the check
    peak_rss_with_check: int | None = None  # read as the server stops, the check included
    # The CPU used from the first POST until drained, per statement (bench.server.CpuReading).
    cpu: str = ""
    progress_check: str = "not run"
    workers: int = 1
    # What the server ran, once it started: "processes ..." for the notes (bench.server).
    processes: str = ""
    error: str = ""
    log_problems: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.post is not None

    def values(self) -> dict[str, Any] | None:
        if self.post is None:
            return None
        post = self.post
        return {
            "statements": post.statements,
            "post_seconds": post.seconds,
            "rate": post.rate,
            "post_p50_ms": post.p50_ms,
            "post_p99_ms": post.p99_ms,
            "drain_s": self.drain_s,
            "rss_start_mib": _mib(self.rss_start),
            "rss_after_post_mib": _mib(self.rss_after_post),
            "rss_end_mib": _mib(self.rss_end),
            "peak_rss_mib": _mib(self.peak_rss),
        }

    def notes(self, config: DiscoveredConfig) -> list[str]:
        """`key=value` facts for the [notes] lines."""
        notes = [
            f"statements_acknowledged={self.acknowledged} batch_size={config.batch_size} "
            f"concurrency={config.concurrency} learners={config.learners} modules={MODULES}",
            f"drain={self.drain}",
            f"progress_check={self.progress_check}",
        ]
        if self.peak_rss_with_check is not None:
            # The check reads every record in pages of a thousand (GET /progress): its answers
            # are held whole in the API process, a peak of the check's, not of the scenario.
            notes.append(f"peak_rss_with_check_mib={_mib(self.peak_rss_with_check)}")
        if self.cpu:
            notes.append(f"cpu_per_statement_posts_and_drain={self.cpu}")
        if self.processes:
            notes.append(self.processes)
        if self.log_problems:
            notes.append(log_problems_note(self.log_problems))
        if self.error:
            notes.append(f"error={self.error}")
        return notes


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


async def owed(client: XapiClient) -> int | None:
    """What the derivation still owes (`Backlog.owed`), or None when /ready gave no figure."""
    try:
        return (await derivation_backlog(client)).owed
    except BacklogUnknown:
        return None


async def _drain(
    client: XapiClient,
    config: DiscoveredConfig,
    last_ack: float,
    outcome: DiscoveredOutcome,
) -> None:
    """Poll until nothing is owed; sets drain_s (from `last_ack`) or says why not."""
    word = time.perf_counter() + 30.0  # a large backlog takes minutes: say something
    left: int | None = None
    while True:
        left = await owed(client)
        now = time.perf_counter()
        if left == 0:
            outcome.drain_s = round(max(0.0, now - last_ack), 3)
            outcome.drain = "ok"
            return
        if now - last_ack >= config.drain_timeout:
            outcome.drain = (
                f"gave_up_after_{config.drain_timeout:g}s "
                f"(owed {'unknown' if left is None else left})"
            )
            return
        if now >= word:
            word += 30.0
            print(
                f"[{BENCHMARK}] {outcome.backend} waiting for derivation: {left} owed, "
                f"{now - last_ack:.0f} s after the last POST",
                file=sys.stderr,
                flush=True,
            )
        await asyncio.sleep(config.poll_interval)


async def _check_progress(client: XapiClient, workload: Workload) -> str:
    """Every (learner, module) record of the course against what was sent; a short verdict."""
    items, viewed = workload.expected()
    url = f"/progress?course={quote(workload.course, safe='')}&limit=1000"
    records: list[dict[str, Any]] = []
    while url:
        response = await client.get(url)
        if response.status_code != 200:
            return f"GET_/progress_answered_{response.status_code}"
        body = json_body(response, "GET /progress")
        records.extend(body["records"])
        url = body["more"]
    wrong_items = sum(1 for r in records if r.get("items_total") != items.get(r.get("module")))
    wrong_viewed = sum(
        1 for r in records if r.get("viewed") != viewed.get((r.get("learner"), r.get("module")))
    )
    if len(records) == len(viewed) and not wrong_items and not wrong_viewed:
        return f"ok records={len(records)} items_per_module={min(items.values())}"
    return (
        f"MISMATCH records={len(records)}/{len(viewed)} wrong_items_total={wrong_items} "
        f"wrong_viewed={wrong_viewed}"
    )


async def _scenario(server: Server, config: DiscoveredConfig, outcome: DiscoveredOutcome) -> None:
    workload = Workload(config, uuid.uuid4().hex[:8])
    bodies = workload.bodies()
    last_ack = 0.0
    async with xapi_client(server, config.concurrency) as client:
        outcome.rss_start = server.rss_bytes()
        cpu_start = CpuReading.now(server)

        async def post(job: tuple[bytes, int]) -> int:
            nonlocal last_ack
            body, count = job
            response = check(
                await client.post("/xapi/statements", content=body, headers=_JSON), BENCHMARK
            )
            acknowledged = len(json_body(response, BENCHMARK))
            outcome.acknowledged += acknowledged
            last_ack = max(last_ack, time.perf_counter())
            return acknowledged

        outcome.post = await measure(
            ROW, "statements/s", bodies, post, config.concurrency, on_progress=_progress
        )
        outcome.rss_after_post = server.rss_bytes()
        print(
            f"[{BENCHMARK}] {outcome.backend} POSTs done: {outcome.post.rate:.0f} statements/s; "
            "waiting for the derivation",
            file=sys.stderr,
            flush=True,
        )
        outcome.drain = "interrupted"
        await _drain(client, config, last_ack, outcome)
        if outcome.drain == "ok":  # else the derivation's share is not all in it
            outcome.cpu = cpu_start.per_statement(CpuReading.now(server), outcome.acknowledged)
        outcome.rss_end = server.rss_bytes()
        outcome.peak_rss = server.peak_rss_bytes()
        outcome.progress_check = await _check_progress(client, workload)


def _progress(result: PhaseResult) -> None:
    print(
        f"[{BENCHMARK}] POSTing: {result.statements} statements in {result.seconds:.0f}s",
        file=sys.stderr,
        flush=True,
    )


def run(
    config: DiscoveredConfig,
    backend: str,
    mongodb_url: str | None = None,
    outcome: DiscoveredOutcome | None = None,
    workers: int = 1,
    log_name: str = BENCHMARK,
    derivation: str = "auto",
) -> DiscoveredOutcome:
    """The scenario on a fresh server of `backend` (`workers` API processes,
    LRS_DERIVATION=`derivation`), filling `outcome`; the server is stopped either way. Errors
    are kept in `outcome.error`; Ctrl-C is recorded too, then propagates."""
    outcome = DiscoveredOutcome(backend, workers=workers) if outcome is None else outcome
    outcome.workers = workers
    print(f"[{BENCHMARK}] {backend} {config.statements} statements ...", file=sys.stderr)
    extra = {"LRS_DERIVATION": derivation}
    log_copy = RESULTS_DIR / f"{log_name}-{backend}.server.log"
    try:
        with Server.start(
            backend, mongodb_url=mongodb_url, extra_env=extra, keep_log=log_copy, workers=workers
        ) as server:
            outcome.processes = server.processes_note("rss", "VmRSS, VmHWM")
            try:
                asyncio.run(_scenario(server, config, outcome))
            except (BenchError, KeyboardInterrupt) as exc:
                outcome.error = (str(exc) or type(exc).__name__).replace("\n", " ")[:300]
                if isinstance(exc, KeyboardInterrupt):
                    raise
            finally:
                # Read before the server stops: VmHWM disappears with the process.
                outcome.peak_rss_with_check = server.peak_rss_bytes()
                if outcome.peak_rss is None:  # it ended before the check: the same peak
                    outcome.peak_rss = outcome.peak_rss_with_check
                server.stop()
                outcome.log_problems = server.problems()
    except BenchError as exc:  # the server did not start
        outcome.error = str(exc).replace("\n", " ")[:300]
    print(
        f"[{BENCHMARK}] {backend} done: drain {outcome.drain}, progress {outcome.progress_check}",
        file=sys.stderr,
        flush=True,
    )
    return outcome
