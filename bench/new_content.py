"""New content: POST batches whose every statement names an Activity (with a definition) and an
Agent (with a name) the LRS has never seen, as a content library being rolled out does.

    python -m bench.new_content                      # 20,000 statements
    python -m bench.new_content --statements 5000

The main suite's corpus names 55 Activities and 300 Agents, all known after the first
batches, so it never measures what recording new ones costs: a fresh `lrs serve` (the
default topology, as `bench ingest` starts it) is sent `--statements` in POSTs of
`--batch-size` at `--concurrency`, and the rate, latency and the server's CPU per statement
are printed. Separate from `python -m bench`, whose output format it leaves alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

from bench.client import check, xapi_client
from bench.server import CpuReading, Server
from bench.stats import measure

_JSON = {"Content-Type": "application/json"}


def new_content_statement(tag: str, n: int) -> dict[str, Any]:
    """Statement `n` of a run: its Activity and its Agent are the run's `n`th, new to the LRS."""
    return {
        "id": str(uuid.uuid4()),
        "actor": {
            "objectType": "Agent",
            "name": f"Learner {n}",
            "mbox": f"mailto:learner-{tag}-{n}@example.com",
        },
        "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
        "object": {
            "objectType": "Activity",
            "id": f"https://content.example.com/{tag}/item/{n}",
            "definition": {
                "type": "http://adlnet.gov/expapi/activities/media",
                "name": {"en-US": f"Item {n}"},
            },
        },
    }


def bodies(statements: int, batch_size: int, tag: str) -> list[tuple[bytes, int]]:
    out = []
    for first in range(0, statements, batch_size):
        batch = [
            new_content_statement(tag, n) for n in range(first, min(first + batch_size, statements))
        ]
        out.append((json.dumps(batch).encode(), len(batch)))
    return out


async def _run(statements: int, batch_size: int, concurrency: int) -> None:
    jobs = bodies(statements, batch_size, uuid.uuid4().hex[:8])
    with Server.start("embedded") as server:
        async with xapi_client(server, concurrency) as client:
            cpu_start = CpuReading.now(server)

            async def post(job: tuple[bytes, int]) -> int:
                body, count = job
                check(await client.post("/xapi/statements", content=body, headers=_JSON), "post")
                return count

            result = await measure("new-content", "statements/s", jobs, post, concurrency)
            cpu = cpu_start.per_statement(CpuReading.now(server), statements)
    print(
        f"[new-content] embedded post-batch-{batch_size} {result.rate:.1f} statements/s "
        f"p50 {result.p50_ms:.1f} ms p99 {result.p99_ms:.1f} ms; cpu_per_statement={cpu}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.new_content", description=__doc__)
    parser.add_argument("--statements", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    asyncio.run(_run(args.statements, args.batch_size, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
