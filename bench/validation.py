"""Validation benchmark: what the LRS spends per statement before storing it, measured in this
process (no server, no store), on the bench's typical statements (bench.data).

Rows (fixed names and order, see `bench.report`):
- validate-statement   lrs.xapi.validation.validate_statement (xAPI 1.0.3), one statement a call
- json-decode          lrs.xapi.jsontext.loads, the server's strict JSON parser, of each
                       statement's JSON bytes, one statement a call
- json-decode-stdlib   json.loads of the same bytes: the strict checks' share of json-decode
- validate-recognised  validate_statement as the server calls it (`parsed_json`): an actor,
                       Verb, Activity or contextActivities seen valid earlier in the pass is
                       not checked again; the sets of those seen are emptied before each pass,
                       so every pass starts as a fresh server does

validate-statement checks every part of every statement: it stays the yardstick of a machine's
speed that the README and docs/benchmarks-history.md compare machines by.

Each step runs `repeats` passes over the same statements, after a short unmeasured warm-up;
the row reports the fastest pass (the least disturbed by whatever else the machine did).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.data import generate

BENCHMARK = "validation"
BACKEND = "local"  # the report's backend column: measured here, on no back end
STEPS = ("validate-statement", "json-decode", "json-decode-stdlib", "validate-recognised")
WARMUP = 500  # statements run through each step before the timed passes


@dataclass(frozen=True)
class ValidationConfig:
    statements: int = 20_000
    repeats: int = 3
    seed: int = 42


QUICK = ValidationConfig(statements=2_000, repeats=1)


@dataclass(frozen=True)
class StepResult:
    step: str
    statements: int
    seconds: float  # the fastest pass

    @property
    def us_per_statement(self) -> float:
        return self.seconds / self.statements * 1e6 if self.statements else 0.0

    def values(self) -> dict[str, Any]:
        return {
            "statements": self.statements,
            "seconds": self.seconds,
            "us_per_statement": self.us_per_statement,
        }


@dataclass
class ValidationOutcome:
    steps: list[StepResult] = field(default_factory=list)
    bytes_mean: float | None = None  # mean size of a statement's JSON
    error: str = ""

    def notes(self, config: ValidationConfig) -> list[str]:
        notes = [
            f"repeats={config.repeats} (best pass reported) seed={config.seed}",
            "statement_bytes_mean="
            + ("-" if self.bytes_mean is None else f"{self.bytes_mean:.0f}"),
        ]
        if self.error:
            notes.append(f"error={self.error}")
        else:
            missing = [step for step in STEPS if step not in {s.step for s in self.steps}]
            if missing:
                notes.append(f"not_run={','.join(missing)} (interrupted)")
        return notes


def _fastest(
    call: Callable[[Any], object],
    items: Sequence[Any],
    repeats: int,
    before_pass: Callable[[], object] = lambda: None,
) -> float:
    for item in items[:WARMUP]:
        call(item)
    best = float("inf")
    for _ in range(repeats):
        before_pass()
        started = time.perf_counter()
        for item in items:
            call(item)
        best = min(best, time.perf_counter() - started)
    return best


def run(config: ValidationConfig, outcome: ValidationOutcome | None = None) -> ValidationOutcome:
    """Time each step; steps appear in `outcome` as they finish (so an interrupted run keeps
    them). A statement the validator or the parser refuses is an error: the bench's statements
    are meant to be valid, and timing refusals would measure something else."""
    # Imported here: the rest of the bench talks to the LRS over HTTP only.
    from lrs.xapi import jsontext
    from lrs.xapi.validation import (
        StatementValidationError,
        forget_known_values,
        validate_statement,
    )

    outcome = ValidationOutcome() if outcome is None else outcome
    _, statements = generate(config.seed, config.statements)
    raw = [json.dumps(s).encode() for s in statements]
    outcome.bytes_mean = sum(len(r) for r in raw) / len(raw)

    def decode(data: bytes) -> object:
        return jsontext.loads(data, "statement")

    def validate_recognised(statement: object) -> None:
        validate_statement(statement, parsed_json=True)

    Step = tuple[str, Callable[[Any], object], Sequence[Any], Callable[[], object]]
    steps: list[Step] = [
        ("validate-statement", validate_statement, statements, lambda: None),
        ("json-decode", decode, raw, lambda: None),
        ("json-decode-stdlib", json.loads, raw, lambda: None),
        ("validate-recognised", validate_recognised, statements, forget_known_values),
    ]
    assert [name for name, *_ in steps] == list(STEPS), "STEPS out of date"
    for name, call, items, before_pass in steps:
        try:
            seconds = _fastest(call, items, config.repeats, before_pass)
        except (StatementValidationError, jsontext.JSONTextError) as exc:
            outcome.error = f"{name}: {exc}".replace("\n", " ")[:300]
            return outcome
        result = StepResult(name, len(items), seconds)
        outcome.steps.append(result)
        print(
            f"[{BENCHMARK}] {name}: {result.us_per_statement:.1f} us/statement",
            file=sys.stderr,
            flush=True,
        )
    return outcome
