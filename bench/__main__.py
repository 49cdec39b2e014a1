"""`python -m bench [all|ingest|propagation|validation|discovered|broker|reference] [options]`: the
benchmarks, against real `lrs serve` processes on fresh stores, with one fixed-format report at
the end (see bench.suite).

    python -m bench                              # everything, store of 100,000 statements
    python -m bench --statements 5000 --seconds 5
    python -m bench ingest --quick
    python -m bench propagation --mode celery
    python -m bench validation
    python -m bench discovered --discovered-statements 5000 --workers 2
    python -m bench discovered --discovered-statements 200000 --discovered-learners 800
    python -m bench ingest --derivation inprocess
    python -m bench propagation --mode process
    python -m bench broker
    python -m bench reference                    # the bare app: this machine's limit
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import FrameType

from bench import broker, discovered, ingest, propagation, reference, validation
from bench.suite import BENCHMARKS, Options, execute

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MONGODB_SKIPPED = "mongodb: skipped (LRS_MONGODB_URL not set)"
MAX_WORKERS = 64  # as lrs serve (LRS_WORKERS)
# LRS_DERIVATION of the ingest and discovered servers (celery needs Redis and a worker: only the
# propagation benchmark runs that topology).
DERIVATIONS = ("auto", "inprocess", "process")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _workers(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_WORKERS}, not {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def parser() -> argparse.ArgumentParser:
    ing, prop = ingest.IngestConfig(), propagation.Config()
    val, disc = validation.ValidationConfig(), discovered.DiscoveredConfig()
    rates = ", ".join(f"{m} {r:g}" for m, r in propagation.DEFAULT_RATES.items())
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Start the LRS on a fresh embedded store (and, when LRS_MONGODB_URL is set, again on "
            "a fresh MongoDB database, dropped afterwards), measure over loopback HTTP, print a "
            "fixed-format report and write bench/results/<run>.json."
        ),
    )
    p.add_argument(
        "benchmark",
        nargs="?",
        default="all",
        choices=BENCHMARKS,
        help="all (default): validation and reference, then ingest, propagation, discovered and "
        "broker on each back end",
    )
    g = p.add_argument_group("ingest and queries")
    g.add_argument(
        "--statements",
        type=_positive,
        help=f"size the store is grown to, singles included ({ing.statements})",
    )
    g.add_argument(
        "--singles",
        type=_non_negative,
        help=f"of those, POSTed one per request, last ({ing.singles})",
    )
    g.add_argument("--batch-size", type=_positive, help=f"statements per batch ({ing.batch_size})")
    g.add_argument(
        "--concurrency",
        type=_positive,
        help=f"requests in flight, also of the discovered scenario ({ing.concurrency})",
    )
    g.add_argument("--queries", type=_positive, help=f"requests per GET phase ({ing.queries})")
    g.add_argument(
        "--seed", type=int, help=f"data generation seed, also of validation ({ing.seed})"
    )
    g.add_argument(
        "--settle-seconds",
        type=_non_negative_float,
        help="before the GETs, wait at most this long for the server to derive what was "
        f"POSTed, so queries run on a store at rest ({ing.settle_seconds:g}; 0: do not wait)",
    )
    g.add_argument(
        "--phase-seconds",
        type=_positive_float,
        help="time budget per phase except the batch POSTs and the final scan: stop starting "
        "requests after this long and report what finished (default: unlimited)",
    )
    g = p.add_argument_group("propagation")
    g.add_argument(
        "--rate",
        type=_positive_float,
        help=f"statements/s offered in every mode (default per mode: {rates})",
    )
    g.add_argument(
        "--seconds", type=_positive_float, help=f"length of the measured load ({prop.seconds:g})"
    )
    g.add_argument(
        "--warmup", type=_non_negative_float, help=f"seconds of unmeasured load ({prop.warmup:g})"
    )
    g.add_argument("--post-size", type=_positive, help=f"statements per POST ({prop.batch_size})")
    g.add_argument(
        "--mode",
        action="append",
        choices=propagation.MODES,
        help=f"repeatable; default: every mode ({', '.join(propagation.MODES)})",
    )
    g.add_argument(
        "--redis-url",
        help="Redis for the celery mode and the broker benchmark's redis-up row (default: "
        f"LRS_REDIS_URL, else {DEFAULT_REDIS_URL})",
    )
    g = p.add_argument_group("validation (in this process)")
    g.add_argument(
        "--validations",
        type=_positive,
        help=f"statements validated and decoded per pass ({val.statements}; "
        f"best of {val.repeats} passes)",
    )
    g = p.add_argument_group("discovered modules")
    g.add_argument(
        "--discovered-statements",
        type=_positive,
        help=f"statements, each a new item of one of {discovered.MODULES} discovered modules, "
        f"POSTed {disc.batch_size} a request ({disc.statements})",
    )
    g.add_argument(
        "--discovered-learners",
        type=_positive,
        help=f"learners the statements are spread over, each working in every module "
        f"({disc.learners}); with more statements, as many more learners keep each learner's "
        f"items per module as in the default run",
    )
    g = p.add_argument_group("reference (the bare app)")
    g.add_argument(
        "--reference-statements",
        type=_positive,
        help=f"statements POSTed 100 a request to the bare app before its --singles "
        f"({reference.ReferenceConfig().statements})",
    )
    g = p.add_argument_group("every benchmark")
    g.add_argument(
        "--workers",
        type=_workers,
        help="API processes of the ingest and discovered servers (lrs serve --workers; their "
        "RSS figures are then summed over the processes); propagation always runs one (1)",
    )
    g.add_argument(
        "--derivation",
        choices=DERIVATIONS,
        help="who derives progress in the ingest and discovered servers (LRS_DERIVATION): "
        "inprocess, the API processes; process, a derivation process beside them (RSS figures "
        "then summed with it); auto (default), what lrs serve picks on this machine (process on "
        "the embedded store with 2 cores or more); propagation measures each in its own mode",
    )
    g.add_argument(
        "--backend",
        choices=["embedded", "mongodb"],
        action="append",
        help="run only on this back end (repeatable); default: embedded, plus mongodb when "
        "LRS_MONGODB_URL is set",
    )
    g.add_argument(
        "--quick",
        action="store_true",
        help=(
            f"smoke test: {ingest.QUICK.statements} statements ({ingest.QUICK.singles} singles), "
            f"{ingest.QUICK.queries} queries per phase, propagation "
            f"{propagation.QUICK.rates_text(propagation.MODES)} for "
            f"{propagation.QUICK.seconds:g} s, {validation.QUICK.statements} validations, "
            f"{discovered.QUICK.statements} discovered statements, {broker.QUICK.singles} single "
            f"POSTs per broker row, {reference.QUICK.statements} + {reference.QUICK.singles} to "
            "the reference app (explicit options still win)"
        ),
    )
    return p


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Options:
    """Options from the command line and the environment; exits (status 2) on bad input."""
    p = parser()
    args = p.parse_args(list(argv))
    given = {
        "statements": args.statements,
        "singles": args.singles,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "queries": args.queries,
        "seed": args.seed,
        "phase_seconds": args.phase_seconds,
        "settle_seconds": args.settle_seconds,
    }
    ing = replace(
        ingest.QUICK if args.quick else ingest.IngestConfig(),
        **{k: v for k, v in given.items() if v is not None},
    )
    if args.statements is not None and args.benchmark in ("validation", "discovered"):
        option = "--validations" if args.benchmark == "validation" else "--discovered-statements"
        p.error(f"--statements sizes the ingest store; {args.benchmark} takes {option}")
    if ing.singles >= ing.statements and args.benchmark in ("all", "ingest"):
        if args.singles is not None:
            p.error(f"--singles ({ing.singles}) must be less than --statements ({ing.statements})")
        # Only --statements was given, and it is small: keep singles to a tenth of the store.
        ing = replace(ing, singles=ing.statements // 10)
    given = {
        "rate": args.rate,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "batch_size": args.post_size,
    }
    prop = replace(
        propagation.QUICK if args.quick else propagation.Config(),
        **{k: v for k, v in given.items() if v is not None},
    )

    val = validation.QUICK if args.quick else validation.ValidationConfig()
    val = replace(
        val,
        statements=args.validations or val.statements,
        seed=val.seed if args.seed is None else args.seed,
    )
    disc = discovered.QUICK if args.quick else discovered.DiscoveredConfig()
    disc = replace(
        disc,
        statements=args.discovered_statements or disc.statements,
        learners=args.discovered_learners or disc.learners,
        concurrency=args.concurrency or disc.concurrency,
    )

    brk = broker.QUICK if args.quick else broker.BrokerConfig()
    brk = replace(
        brk,
        concurrency=args.concurrency or brk.concurrency,
        seed=brk.seed if args.seed is None else args.seed,
    )

    bare = reference.QUICK if args.quick else reference.ReferenceConfig()
    bare = replace(
        bare,
        statements=args.reference_statements or bare.statements,
        singles=bare.singles if args.singles is None else args.singles,
        concurrency=args.concurrency or bare.concurrency,
        seed=bare.seed if args.seed is None else args.seed,
    )

    mongodb_url = environ.get("LRS_MONGODB_URL") or None
    if args.backend and "mongodb" in args.backend and not mongodb_url:
        p.error("--backend mongodb needs LRS_MONGODB_URL")
    backends = tuple(dict.fromkeys(args.backend or ["embedded", "mongodb"]))
    skipped: list[str] = []
    if "mongodb" in backends and not mongodb_url:
        backends = tuple(b for b in backends if b != "mongodb")
        skipped.append(MONGODB_SKIPPED)
    elif "mongodb" not in backends:
        skipped.append(
            MONGODB_SKIPPED if not mongodb_url else "mongodb: skipped (not in --backend)"
        )
    return Options(
        benchmark=args.benchmark,
        ingest=ing,
        propagation=prop,
        modes=tuple(dict.fromkeys(args.mode or propagation.MODES)),
        backends=backends,
        skipped=tuple(skipped),
        mongodb_url=mongodb_url,
        redis_url=args.redis_url or environ.get("LRS_REDIS_URL") or DEFAULT_REDIS_URL,
        validation=val,
        discovered=disc,
        broker=brk,
        reference=bare,
        workers=args.workers or 1,
        derivation=args.derivation or "auto",
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM cleans up like Ctrl-C: unwinding stops the servers this run started.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv, os.environ)
    signal.signal(signal.SIGTERM, _terminate)
    return execute(options)


if __name__ == "__main__":
    sys.exit(main())
