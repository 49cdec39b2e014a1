"""Entry points of the two processes of the Celery propagation mode, on a private queue.

    python -m bench.celery_child api QUEUE -- serve --host 127.0.0.1 --port 8123
    python -m bench.celery_child worker QUEUE STATS.json

Redis on a developer machine is shared (other checkouts, the test suite), and the project's
Celery app sends every task to the default `celery` queue: a stranger's worker could take our
tasks, and ours theirs. Both processes therefore set `task_default_queue` to a queue private to
the run before anything else touches the app, then run exactly what `lrs serve` and `lrs worker`
run (`lrs.cli.main`; Celery's own worker command), in this process, so its pid is the one whose
peak RSS is read. The worker also counts its derivation tasks and their execution time
(Celery's task_prerun/task_postrun signals) and writes them to STATS.json when it stops.

Imports stay minimal on purpose: anything imported here would count in the measured RSS.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _use_queue(queue: str) -> Any:
    from workers.celery_app import app

    # Before the app's amqp object is first built: it caches queues and router from the config.
    app.conf.update(task_default_queue=queue)
    return app


def run_api(queue: str, lrs_args: Sequence[str]) -> int:
    _use_queue(queue)
    from lrs.cli import main

    return main(list(lrs_args))


def run_worker(queue: str, stats_path: Path) -> int:
    from celery import signals

    app = _use_queue(queue)
    stats: dict[str, Any] = {"tasks": 0, "statements": 0, "busy_s": 0.0}
    started: dict[str, float] = {}

    def prerun(task_id: str = "", **_: Any) -> None:
        started[task_id] = time.perf_counter()

    def postrun(
        task_id: str = "", task: Any = None, args: Any = (), state: Any = None, **_: Any
    ) -> None:
        begun = started.pop(task_id, None)
        if begun is not None:
            stats["busy_s"] += time.perf_counter() - begun
        if getattr(task, "name", "") == "lrs.derive_statements" and state == "SUCCESS":
            stats["tasks"] += 1
            stats["statements"] += len(args[1])

    def shutdown(**_: Any) -> None:
        busy = stats["busy_s"]
        stats["capacity_per_s"] = round(stats["statements"] / busy, 1) if busy else 0.0
        stats["busy_s"] = round(busy, 3)
        stats_path.write_text(json.dumps(stats))

    signals.task_prerun.connect(prerun, weak=False)
    signals.task_postrun.connect(postrun, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)
    # What `lrs worker --pool solo ...` runs (`celery -A workers worker`), minus the exec. The
    # solo pool runs tasks in this very process, so its VmHWM is the whole worker's peak.
    app.worker_main(
        [
            "worker",
            "--loglevel",
            "INFO",
            "--pool",
            "solo",
            "--without-mingle",
            "--without-gossip",
            "--queues",
            queue,
            "--hostname",
            f"{queue}@%h",
        ]
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "api":
        rest = args[2:]
        return run_api(args[1], rest[1:] if rest[:1] == ["--"] else rest)
    if len(args) == 3 and args[0] == "worker":
        return run_worker(args[1], Path(args[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
