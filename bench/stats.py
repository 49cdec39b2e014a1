"""Latency statistics and the concurrent request pool shared by the benchmarks."""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none).

    Nearest rank rather than interpolation: p99 is then a latency that really happened.
    """
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class PhaseResult:
    """The figures of one timed phase. `unit` says what `rate` counts per second."""

    phase: str
    unit: str  # "statements/s" or "requests/s"
    requests: int
    statements: int  # statements sent (ingest) or returned (queries)
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Collects per-request latencies and counted items for one phase."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.items = 0

    def add(self, seconds: float, items: int = 1) -> None:
        self.latencies.append(seconds)
        self.items += items

    def result(self, phase: str, unit: str, elapsed: float) -> PhaseResult:
        values = sorted(self.latencies)
        count = self.items if unit == "statements/s" else len(values)
        return PhaseResult(
            phase=phase,
            unit=unit,
            requests=len(values),
            statements=self.items,
            seconds=round(elapsed, 3),
            rate=round(count / elapsed, 1) if elapsed > 0 else 0.0,
            p50_ms=round(percentile(values, 0.50) * 1000, 2),
            p99_ms=round(percentile(values, 0.99) * 1000, 2),
            max_ms=round((values[-1] if values else 0.0) * 1000, 2),
        )


Report = Callable[[PhaseResult], None]


async def measure(
    phase: str,
    unit: str,
    jobs: Iterable[T],
    call: Callable[[T], Awaitable[int]],
    concurrency: int,
    *,
    budget: float | None = None,
    on_abort: Report | None = None,
    on_progress: Report | None = None,
) -> PhaseResult:
    """Run `call(job)` for every job with `concurrency` workers; each call returns its item
    count and is timed as one request. Elapsed time spans the whole phase. See
    `measure_self_timed` for the keyword options."""

    async def timed(job: T, recorder: Recorder) -> None:
        started = time.perf_counter()
        items = await call(job)
        recorder.add(time.perf_counter() - started, items)

    return await measure_self_timed(
        phase,
        unit,
        jobs,
        timed,
        concurrency,
        budget=budget,
        on_abort=on_abort,
        on_progress=on_progress,
    )


async def measure_self_timed(
    phase: str,
    unit: str,
    jobs: Iterable[T],
    call: Callable[[T, Recorder], Awaitable[None]],
    concurrency: int,
    *,
    budget: float | None = None,
    on_abort: Report | None = None,
    on_progress: Report | None = None,
    progress_every: float = 60.0,
) -> PhaseResult:
    """Like `measure`, for jobs that make several requests and record each one themselves
    (e.g. following `more` links, where page 2 needs page 1's answer).

    - budget: seconds after which no new job starts (jobs in flight finish), so one very slow
      phase cannot stall a whole run; the result then simply counts fewer requests.
    - on_abort: receives the figures so far when the phase fails or is cancelled (Ctrl-C),
      so a long run that is stopped still reports its last phase.
    - on_progress: receives the figures so far every `progress_every` seconds.

    A fixed pool of workers pulling from one iterator (rather than one task per job) keeps
    exactly `concurrency` jobs in flight and costs no memory per pending job.
    """
    recorder = Recorder()
    iterator = iter(jobs)
    # The client's own cyclic garbage collector would stop every request in flight for tens
    # of milliseconds at a time (seen: 40-56 ms about every 0.3 s during the GET phases), which
    # the latency figures would blame on the server: it waits until the phase is over.
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    started = time.perf_counter()
    deadline = started + budget if budget is not None else math.inf

    async def worker() -> None:
        for job in iterator:
            await call(job, recorder)
            if time.perf_counter() >= deadline:
                return

    async def progress() -> None:
        while True:
            await asyncio.sleep(progress_every)
            if on_progress is not None:
                on_progress(recorder.result(phase, unit, time.perf_counter() - started))

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*workers)
    except BaseException:
        if on_abort is not None:
            on_abort(recorder.result(phase, unit, time.perf_counter() - started))
        raise
    finally:
        # On the first failure stop the other workers instead of letting them run on.
        for task in [*workers, reporter]:
            task.cancel()
        await asyncio.gather(*workers, reporter, return_exceptions=True)
        if collecting:
            gc.enable()
    return recorder.result(phase, unit, time.perf_counter() - started)
