"""`python -m bench`: run a benchmark against a freshly started `lrs serve`.

Only the ingestion benchmark exists so far; later ones are further choices of the positional
`benchmark` argument, each a module with its own `run(...)`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from bench import ingest, propagation
from bench.server import BenchError


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Start the LRS on a fresh embedded store (and, when LRS_MONGODB_URL is set, again "
            "on a fresh MongoDB database), load it over loopback HTTP, print a fixed-format "
            "table and write bench/results/<benchmark>-<backend>.json."
        ),
    )
    parser.add_argument(
        "benchmark", nargs="?", default="ingest", choices=["ingest"], help="what to run (ingest)"
    )
    defaults = ingest.IngestConfig()
    parser.add_argument(
        "--statements", type=_positive, help=f"statements POSTed in batches ({defaults.statements})"
    )
    parser.add_argument(
        "--singles", type=_non_negative, help=f"statements POSTed one by one ({defaults.singles})"
    )
    parser.add_argument(
        "--batch-size", type=_positive, help=f"statements per batch ({defaults.batch_size})"
    )
    parser.add_argument(
        "--concurrency", type=_positive, help=f"requests in flight ({defaults.concurrency})"
    )
    parser.add_argument(
        "--queries", type=_positive, help=f"requests per GET phase ({defaults.queries})"
    )
    parser.add_argument("--seed", type=int, help=f"data generation seed ({defaults.seed})")
    parser.add_argument(
        "--phase-seconds",
        type=float,
        help="time budget per phase except the batch POSTs and the final scan: stop starting "
        "requests after this long and report what finished (default: unlimited; on the "
        "embedded store a full default run takes long)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            f"smoke test: {ingest.QUICK.statements} statements, {ingest.QUICK.singles} singles, "
            f"{ingest.QUICK.queries} queries per phase (explicit options still win)"
        ),
    )
    parser.add_argument(
        "--backend",
        choices=["embedded", "mongodb"],
        action="append",
        help="run only on this back end (repeatable); default: embedded, plus mongodb when "
        "LRS_MONGODB_URL is set",
    )
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM should clean up like Ctrl-C does: unwinding runs the server's stop().
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    if (argv := list(sys.argv[1:] if argv is None else argv))[:1] == ["propagation"]:
        return propagation.main(argv[1:])  # its own options: python -m bench propagation -h
    args = _parser().parse_args(argv)
    overrides = {
        "statements": args.statements,
        "singles": args.singles,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "queries": args.queries,
        "seed": args.seed,
        "phase_seconds": args.phase_seconds,
    }
    config = ingest.quick_config(**overrides) if args.quick else ingest.full_config(**overrides)
    mongodb_url = os.environ.get("LRS_MONGODB_URL") or None
    backends = args.backend or (["embedded"] + (["mongodb"] if mongodb_url else []))
    if "mongodb" in backends and not mongodb_url:
        print("error: --backend mongodb needs LRS_MONGODB_URL", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _terminate)
    try:
        for backend in backends:
            ingest.run(
                config,
                backend,
                mongodb_url if backend == "mongodb" else None,
                # A smoke test must not overwrite the figures full runs are compared with.
                results_name="ingest-quick" if args.quick else "ingest",
            )
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted; the server was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
