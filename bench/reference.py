"""Reference benchmark: the same load against the least a statement write can cost here.

    python -m bench reference

Issue 10 set its targets against a physical limit measured on its machine: a bare FastAPI app
that only validates each statement and inserts it with five index rows into SQLite, one
transaction per request (7,600 statements/s in batches of 100, 870 single POSTs/s). That app is
`bench.bare_app`; this benchmark starts it on a fresh file and sends it the ingest section's
load through the same client: `--reference-statements` (20,000) in POSTs of 100, then
`--singles` (1,000) one per request, at `--concurrency`. Machines of one kind differ by a
factor of two and more from one day to the next, so the LRS's figures read best beside these
rows of the same run: the issue's targets are 53% (batches) and 69% (single POSTs) of its limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.client import XapiClient, check, json_body
from bench.data import generate
from bench.server import (
    LOOPBACK,
    BenchError,
    CpuReading,
    cpu_seconds,
    free_port,
    stop_process,
)
from bench.stats import PhaseResult, measure

BENCHMARK = "reference"
BACKEND = "sqlite"  # the report's backend column: the bare app's store
ROWS = ("bare-batch-100", "bare-single")  # fixed: the section's rows, in order
_JSON = {"Content-Type": "application/json"}
_BATCH = 100


@dataclass(frozen=True)
class ReferenceConfig:
    statements: int = 20_000  # POSTed in batches of 100
    singles: int = 1_000
    concurrency: int = 8
    seed: int = 42


QUICK = ReferenceConfig(statements=2_000, singles=200)


@dataclass
class ReferenceOutcome:
    phases: list[PhaseResult] = field(default_factory=list)
    acknowledged: int = 0
    error: str = ""
    # Per row: the CPU the bare app and the client used during it, per statement (the
    # yardstick of the LRS's `cpu_per_statement` notes, as the rows are of its rates).
    cpu: dict[str, str] = field(default_factory=dict)

    def phase(self, row: str) -> PhaseResult | None:
        return next((p for p in self.phases if p.phase == row), None)

    def notes(self) -> list[str]:
        lines = [f"acknowledged={self.acknowledged}", "synchronous=FULL index_rows_per_statement=5"]
        lines.extend(f"cpu_per_statement_{row}={text}" for row, text in self.cpu.items())
        if self.error:
            lines.append(f"error={self.error}")
        return lines


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the reference app exited with {process.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"the reference app did not answer within {timeout:.0f} s")


async def _load(url: str, config: ReferenceConfig, outcome: ReferenceOutcome, pid: int) -> None:
    _, statements = generate(config.seed, config.statements + config.singles)
    batched, singles = statements[: config.statements], statements[config.statements :]
    batches = [json.dumps(batched[i : i + _BATCH]).encode() for i in range(0, len(batched), _BATCH)]
    single_bodies = [json.dumps(s).encode() for s in singles]
    headers = {"X-Experience-API-Version": "1.0.3"}
    async with XapiClient(url, headers, config.concurrency, 120.0) as client:

        async def post(body: bytes) -> int:
            answer = await client.post("/xapi/statements", content=body, headers=_JSON)
            count = len(json_body(check(answer, "reference post"), "reference post"))
            outcome.acknowledged += count
            return count

        def cpu() -> CpuReading:
            return CpuReading(cpu_seconds(pid), time.process_time())

        for row, bodies in zip(ROWS, (batches, single_bodies), strict=True):
            before = cpu()
            outcome.phases.append(
                await measure(row, "statements/s", bodies, post, config.concurrency)
            )
            outcome.cpu[row] = before.per_statement(cpu(), outcome.phases[-1].statements)


def run(config: ReferenceConfig, outcome: ReferenceOutcome | None = None) -> ReferenceOutcome:
    """Both rows on a fresh reference app, stopped either way."""
    outcome = ReferenceOutcome() if outcome is None else outcome
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    print(f"[{BENCHMARK}] {BACKEND} bare app ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="lrs-bench-reference-") as workdir:
        command = [
            sys.executable,
            "-m",
            "bench.bare_app",
            "--port",
            str(port),
            "--path",
            str(Path(workdir) / "bare.sqlite3"),
        ]
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        }
        with open(Path(workdir) / "app.log", "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_ready(url, process)
            asyncio.run(_load(url, config, outcome, process.pid))
        except (BenchError, KeyboardInterrupt) as exc:
            outcome.error = (str(exc) or type(exc).__name__).replace("\n", " ")[:300]
            if isinstance(exc, KeyboardInterrupt):
                raise
        finally:
            stop_process(process)
    return outcome
