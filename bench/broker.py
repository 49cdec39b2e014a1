"""Broker-down benchmark (issue 10: "Redis or the broker down: write latency unchanged").

    python -m bench broker

Two fresh servers of the back end, each the production topology's API (`LRS_DERIVATION=celery`,
no worker: only what the request path does is measured), each sent the same single POSTs at
`--concurrency` after a warm-up:
- `celery-redis-up`:   Redis answers at `--redis-url`; tasks go to a queue private to the run,
                       deleted afterwards (Redis is often shared). Skipped if Redis does not
                       answer.
- `celery-redis-down`: LRS_REDIS_URL names a loopback port nothing listens on.
Every acknowledged statement must be stored either way (the outbox keeps what the broker did
not take): the notes count the statements the store returns against those acknowledged.
Figures per row: as the ingest section's (requests, statements, seconds, statements/s, latency
per request).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.client import XapiClient, check, json_body, xapi_client
from bench.data import generate
from bench.propagation import drop_queue, redis_answers
from bench.report import RESULTS_DIR, log_problems_note
from bench.server import BenchError, Server, free_port
from bench.stats import PhaseResult, measure

BENCHMARK = "broker"
ROWS = ("celery-redis-up", "celery-redis-down")  # fixed: the section's rows, in order
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class BrokerConfig:
    singles: int = 1_000  # measured POSTs per row
    warmup: int = 200  # POSTs before them, not measured (connections, caches)
    concurrency: int = 8
    seed: int = 42


QUICK = BrokerConfig(singles=100, warmup=20)


@dataclass
class BrokerOutcome:
    """What one row's run produced (an interrupted run keeps what finished)."""

    row: str
    phase: PhaseResult | None = None
    acknowledged: int = 0
    stored: int | None = None  # what GET /xapi/statements returned, counted afterwards
    skipped: str = ""
    error: str = ""
    log_problems: list[str] = field(default_factory=list)

    def values(self) -> dict[str, Any] | None:
        return None if self.phase is None else self.phase.as_dict()

    def notes(self) -> list[str]:
        if self.skipped:
            return [f"skipped={self.skipped}"]
        stored = "-" if self.stored is None else self.stored
        lines = [f"acknowledged={self.acknowledged} stored={stored}"]
        if self.stored is not None:
            lines.append("store_check=" + ("ok" if self.stored == self.acknowledged else "MISSING"))
        if self.log_problems:
            lines.append(log_problems_note(self.log_problems))
        if self.error:
            lines.append(f"error={self.error}")
        return lines


def down_url() -> str:
    """A Redis URL on a loopback port that nothing listens on (bound, then released)."""
    return f"redis://127.0.0.1:{free_port()}/0"


async def _post_all(
    server: Server, config: BrokerConfig, outcome: BrokerOutcome, statements: list[Any]
) -> None:
    bodies = [json.dumps(s).encode() for s in statements]
    warmup, measured = bodies[: config.warmup], bodies[config.warmup :]
    async with xapi_client(server, config.concurrency) as client:

        async def post(body: bytes) -> int:
            answer = await client.post("/xapi/statements", content=body, headers=_JSON)
            outcome.acknowledged += len(json_body(check(answer, "post"), "post"))
            return 1

        await measure("warmup", "statements/s", warmup, post, config.concurrency)
        outcome.phase = await measure(
            outcome.row, "statements/s", measured, post, config.concurrency
        )
        outcome.stored = await _count(client)


async def _count(client: XapiClient) -> int:
    """Every statement in the store, paged through `more`."""
    total, path = 0, "/xapi/statements?limit=1000"
    while path:
        response = check(await client.get(path), "count")
        body = json_body(response, "count")
        total += len(body["statements"])
        path = body.get("more") or ""  # a path relative to the server root
    return total


def run_row(
    config: BrokerConfig,
    backend: str,
    row: str,
    redis_url: str,
    mongodb_url: str | None = None,
    log_name: str = BENCHMARK,
) -> BrokerOutcome:
    """One row on a fresh server; the server is stopped either way."""
    outcome = BrokerOutcome(row)
    up = row == "celery-redis-up"
    if up and not redis_answers(redis_url):
        outcome.skipped = f"no_redis_at={redis_url}"
        return outcome
    url = redis_url if up else down_url()
    queue = f"lrs-bench-{uuid.uuid4().hex[:10]}"
    extra = {"LRS_DERIVATION": "celery", "LRS_REDIS_URL": url, "LRS_CELERY_QUEUE": queue}
    _, statements = generate(config.seed, config.warmup + config.singles)
    print(f"[{BENCHMARK}] {backend} {row} ...", file=sys.stderr, flush=True)
    try:
        with Server.start(
            backend,
            mongodb_url=mongodb_url,
            extra_env=extra,
            keep_log=RESULTS_DIR / f"{log_name}-{backend}-{row}.server.log",
        ) as server:
            try:
                asyncio.run(_post_all(server, config, outcome, statements))
            except (BenchError, KeyboardInterrupt) as exc:
                outcome.error = (str(exc) or type(exc).__name__).replace("\n", " ")[:300]
                if isinstance(exc, KeyboardInterrupt):
                    raise
            finally:
                server.stop()
                outcome.log_problems = server.problems()
    except BenchError as exc:  # the server did not start
        outcome.error = str(exc).replace("\n", " ")[:300]
    finally:
        if up:
            drop_queue(redis_url, queue)
    return outcome


def run(
    config: BrokerConfig,
    backend: str,
    redis_url: str,
    mongodb_url: str | None = None,
    outcomes: list[BrokerOutcome] | None = None,
    log_name: str = BENCHMARK,
) -> list[BrokerOutcome]:
    """Both rows, in order, appended to `outcomes` as they finish."""
    outcomes = [] if outcomes is None else outcomes
    for row in ROWS:
        outcomes.append(run_row(config, backend, row, redis_url, mongodb_url, log_name))
    return outcomes
