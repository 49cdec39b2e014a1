"""Run the selected benchmarks on every back end and print one fixed-format report.

`python -m bench` runs all of them; `python -m bench
ingest|propagation|validation|discovered|broker` one (see bench.__main__ for the options).
First the validation cost per statement, measured in this process; then for each back end, in
order: ingestion into a fresh store grown to `--statements`, the filtered GETs on that store,
then propagation delay on fresh stores (in-process derivation, then a derivation process beside
the API process, then Celery with a worker process), the peak RSS of every process involved
(summed over the API processes and the derivation process of an `lrs serve` that runs
several), the discovered-modules scenario on a fresh store, and single POSTs to the production
topology's API with Redis up, then down. `--derivation` sets LRS_DERIVATION for the ingest and
discovered servers. Progress goes to stderr while it runs; the report is printed once at the
end (also after a failure or Ctrl-C, with what finished) and saved under bench/results/.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import broker, discovered, ingest, propagation, reference, validation
from bench.broker import BrokerConfig, BrokerOutcome
from bench.client import LOAD_CLIENT
from bench.discovered import DiscoveredConfig, DiscoveredOutcome
from bench.reference import ReferenceConfig, ReferenceOutcome
from bench.report import (
    BROKER,
    DISCOVERED,
    FORMAT_VERSION,
    INGEST,
    MEMORY,
    PROPAGATION,
    QUERY,
    REFERENCE,
    VALIDATION,
    Row,
    Section,
    environment,
    log_problems_note,
    note_line,
    now,
    render,
    section_json,
    write_run,
)
from bench.stats import PhaseResult
from bench.validation import ValidationConfig, ValidationOutcome

BENCHMARKS = ("all", "ingest", "propagation", "validation", "discovered", "broker", "reference")
# Rows of the memory section per benchmark: the process whose peak RSS is read, and where.
# The discovered scenario reports its own RSS figures; validation starts no process.
MEMORY_ROWS: dict[str, tuple[str, ...]] = {
    "ingest": ("api-ingest",),
    # api-process: the API process and the derivation process, summed.
    "propagation": ("api-inprocess", "api-process", "api-celery", "worker-celery"),
    "validation": (),
    "discovered": (),
    "broker": (),
    "reference": (),
}
MEMORY_ROWS["all"] = MEMORY_ROWS["ingest"] + MEMORY_ROWS["propagation"]


@dataclass(frozen=True)
class Options:
    benchmark: str
    ingest: ingest.IngestConfig
    propagation: propagation.Config
    modes: tuple[str, ...]
    backends: tuple[str, ...]
    skipped: tuple[str, ...]  # printed as is, e.g. "mongodb: skipped (LRS_MONGODB_URL not set)"
    mongodb_url: str | None
    redis_url: str
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    discovered: DiscoveredConfig = field(default_factory=DiscoveredConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    workers: int = 1  # API processes of the ingest and discovered servers
    # LRS_DERIVATION of the ingest and discovered servers: auto, inprocess or process.
    derivation: str = "auto"

    def runs(self, benchmark: str) -> bool:
        return self.benchmark in ("all", benchmark)

    @property
    def name(self) -> str:
        """The results file's name: runs of one name are comparable with each other."""
        if self.benchmark in ("propagation", "validation"):
            return self.benchmark
        if self.benchmark == "discovered":
            return f"discovered-{self.discovered.statements}"
        if self.benchmark in ("broker", "reference"):
            return self.benchmark
        return f"{self.benchmark}-{self.ingest.statements}"

    @property
    def statements(self) -> int:
        """The header's `statements`: the store size, or what the benchmark run alone sends
        (every selected propagation mode's measured statements together) or validates."""
        if self.benchmark == "propagation":
            return sum(self.propagation.statements_of(mode) for mode in self.modes)
        if self.benchmark == "discovered":
            return self.discovered.statements
        if self.benchmark == "validation":
            return self.validation.statements
        if self.benchmark == "broker":
            return len(broker.ROWS) * self.broker.singles
        if self.benchmark == "reference":
            return self.reference.statements + self.reference.singles
        return self.ingest.statements

    def header(self, env: dict[str, Any]) -> dict[str, Any]:
        """The header line's fields, in a fixed order."""
        commit = env.get("commit") or "unknown"
        return {
            "format": FORMAT_VERSION,
            "benchmark": self.benchmark,
            "date": now(),
            "commit": commit[:12],
            "tree": env.get("tree", "unknown"),
            "cores": env.get("cpus"),
            "statements": self.statements,
            "batch_size": self.ingest.batch_size,
            "singles": self.ingest.singles,
            "concurrency": self.ingest.concurrency,
            "queries": self.ingest.queries,
            "rate": self.propagation.rates_text(self.modes),
            "seconds": f"{self.propagation.seconds:g}",
            "python": env.get("python"),
            # Format 2 on: added at the end.
            "workers": self.workers,
            "derivation": self.derivation,  # format 3 on
            "discovered": self.discovered.statements,
            "validations": self.validation.statements,
            "client": LOAD_CLIENT,  # format 4 on
        }


@dataclass
class BackendRun:
    backend: str
    ingest: ingest.IngestOutcome | None = None
    propagation: list[propagation.Result] = field(default_factory=list)
    discovered: DiscoveredOutcome | None = None
    broker: list[BrokerOutcome] = field(default_factory=list)

    def errors(self) -> list[str]:
        errors = [f"ingest: {self.ingest.error}"] if self.ingest and self.ingest.error else []
        errors += [f"propagation-{r.mode}: {r.error}" for r in self.propagation if r.error]
        if self.discovered and self.discovered.error:
            errors.append(f"discovered: {self.discovered.error}")
        errors += [f"broker-{b.row}: {b.error}" for b in self.broker if b.error]
        return errors


# --- from outcomes to rows (pure, tested) -------------------------------------------------


def _phase_values(phase: PhaseResult | None) -> dict[str, Any] | None:
    if phase is None:
        return None
    values = phase.as_dict()
    values["per_request"] = phase.statements / phase.requests if phase.requests else 0.0
    return values


def _phases(run: BackendRun) -> dict[str, PhaseResult]:
    return {p.phase: p for p in run.ingest.phases} if run.ingest else {}


def ingest_rows(runs: Sequence[BackendRun], options: Options) -> list[Row]:
    names = (f"post-batch-{options.ingest.batch_size}", "post-single")
    return [(r.backend, n, _phase_values(_phases(r).get(n))) for r in runs for n in names]


def query_rows(runs: Sequence[BackendRun]) -> list[Row]:
    return [
        (r.backend, n, _phase_values(_phases(r).get(n))) for r in runs for n in ingest.QUERY_PHASES
    ]


def propagation_rows(runs: Sequence[BackendRun]) -> list[Row]:
    rows: list[Row] = []
    for run in runs:
        done = {r.mode: r for r in run.propagation}
        for mode in propagation.MODES:
            result = done.get(mode)
            rows.append((run.backend, mode, asdict(result) if result and result.measured else None))
    return rows


def _mib(value: int | None) -> dict[str, Any] | None:
    return None if value is None else {"peak_rss_mib": round(value / 2**20, 1)}


def memory_rows(runs: Sequence[BackendRun], options: Options) -> list[Row]:
    rows: list[Row] = []
    for run in runs:
        done = {r.mode: r for r in run.propagation}
        peaks = {
            "api-ingest": run.ingest.api_peak_rss if run.ingest else None,
            "api-inprocess": done["inprocess"].api_peak_rss if "inprocess" in done else None,
            "api-process": done["process"].api_peak_rss if "process" in done else None,
            "api-celery": done["celery"].api_peak_rss if "celery" in done else None,
            "worker-celery": done["celery"].worker_peak_rss if "celery" in done else None,
        }
        rows.extend(
            (run.backend, name, _mib(peaks[name])) for name in MEMORY_ROWS[options.benchmark]
        )
    return rows


def validation_rows(outcome: ValidationOutcome | None) -> list[Row]:
    done = {s.step: s for s in outcome.steps} if outcome else {}
    return [
        (validation.BACKEND, step, done[step].values() if step in done else None)
        for step in validation.STEPS
    ]


def discovered_rows(runs: Sequence[BackendRun]) -> list[Row]:
    return [
        (r.backend, discovered.ROW, r.discovered.values() if r.discovered else None) for r in runs
    ]


def broker_rows(runs: Sequence[BackendRun]) -> list[Row]:
    rows: list[Row] = []
    for run in runs:
        done = {b.row: b for b in run.broker}
        rows += [(run.backend, n, done[n].values() if n in done else None) for n in broker.ROWS]
    return rows


def reference_rows(outcome: ReferenceOutcome | None) -> list[Row]:
    return [
        (reference.BACKEND, row, _phase_values(outcome.phase(row)) if outcome else None)
        for row in reference.ROWS
    ]


def sections(
    runs: Sequence[BackendRun],
    options: Options,
    checked: ValidationOutcome | None = None,
    bare: ReferenceOutcome | None = None,
) -> list[tuple[Section, list[Row]]]:
    """The report's tables, in their fixed order; `checked` and `bare` are the validation and
    reference benchmarks' outcomes (not per back end)."""
    out: list[tuple[Section, list[Row]]] = []
    if options.runs("ingest"):
        out += [(INGEST, ingest_rows(runs, options)), (QUERY, query_rows(runs))]
    if options.runs("propagation"):
        out.append((PROPAGATION, propagation_rows(runs)))
    if MEMORY_ROWS[options.benchmark]:
        out.append((MEMORY, memory_rows(runs, options)))
    if options.runs("validation"):
        out.append((VALIDATION, validation_rows(checked)))
    if options.runs("discovered"):
        out.append((DISCOVERED, discovered_rows(runs)))
    if options.runs("broker"):
        out.append((BROKER, broker_rows(runs)))
    if options.runs("reference"):
        out.append((REFERENCE, reference_rows(bare)))
    return out


def notes(
    runs: Sequence[BackendRun],
    options: Options,
    checked: ValidationOutcome | None = None,
    bare: ReferenceOutcome | None = None,
) -> list[str]:
    lines = []
    if options.runs("reference"):
        texts = bare.notes() if bare is not None else ["not_run=interrupted"]
        lines += [note_line(reference.BACKEND, reference.BENCHMARK, t) for t in texts]
    if options.runs("validation"):
        where = validation.BENCHMARK
        if checked is None:
            lines.append(note_line(validation.BACKEND, where, "not_run=interrupted"))
        else:
            lines += [
                note_line(validation.BACKEND, where, t) for t in checked.notes(options.validation)
            ]
    for run in runs:
        if run.ingest is not None:
            for key, value in run.ingest.summary.items():
                lines.append(note_line(run.backend, "ingest", f"{key}={value}"))
            if run.ingest.log_problems:
                problem_note = log_problems_note(run.ingest.log_problems)
                lines.append(note_line(run.backend, "ingest", problem_note))
            if run.ingest.processes:
                # Who derived (`auto` resolved), and whether api-ingest is a sum over processes.
                lines.append(note_line(run.backend, "ingest", run.ingest.processes))
            if run.ingest.error:
                lines.append(note_line(run.backend, "ingest", f"error={run.ingest.error}"))
        for result in run.propagation:
            for text in result.notes():
                lines.append(note_line(run.backend, f"propagation-{result.mode}", text))
        if options.runs("propagation"):
            done = {r.mode for r in run.propagation}
            for mode in propagation.MODES:
                if mode not in done:
                    why = "not selected (--mode)" if mode not in options.modes else "interrupted"
                    lines.append(note_line(run.backend, f"propagation-{mode}", f"not_run={why}"))
        if options.runs("discovered"):
            where = discovered.BENCHMARK
            if run.discovered is None:
                lines.append(note_line(run.backend, where, "not_run=interrupted"))
            else:
                lines += [
                    note_line(run.backend, where, t)
                    for t in run.discovered.notes(options.discovered)
                ]
        if options.runs("broker"):
            done = {b.row: b for b in run.broker}
            for row in broker.ROWS:
                where = f"{broker.BENCHMARK}-{row}"
                texts = done[row].notes() if row in done else ["not_run=interrupted"]
                lines += [note_line(run.backend, where, t) for t in texts]
    return lines


# --- running -------------------------------------------------------------------------------


def execute(options: Options) -> int:
    """Run, print the report, write the results file; the exit status (0, 1 on errors, 130
    when interrupted)."""
    env = environment()
    header = options.header(env)
    runs: list[BackendRun] = []
    checked: ValidationOutcome | None = None
    bare: ReferenceOutcome | None = None
    interrupted = False
    try:
        if options.runs("validation"):
            checked = ValidationOutcome()
            validation.run(options.validation, checked)
        if options.runs("reference"):
            bare = ReferenceOutcome()
            reference.run(options.reference, bare)
        for backend in options.backends:
            run = BackendRun(backend)
            runs.append(run)
            url = options.mongodb_url if backend == "mongodb" else None
            if options.runs("ingest"):
                run.ingest = ingest.IngestOutcome(backend)
                ingest.run(
                    options.ingest,
                    backend,
                    url,
                    run.ingest,
                    log_name=options.name,
                    workers=options.workers,
                    derivation=options.derivation,
                )
            if options.runs("propagation"):
                propagation.run(
                    options.propagation,
                    backend,
                    options.modes,
                    url,
                    options.redis_url,
                    run.propagation,
                )
            if options.runs("discovered"):
                run.discovered = DiscoveredOutcome(backend)
                discovered.run(
                    options.discovered,
                    backend,
                    url,
                    run.discovered,
                    workers=options.workers,
                    log_name=options.name,
                    derivation=options.derivation,
                )
            if options.runs("broker"):
                broker.run(options.broker, backend, options.redis_url, url, run.broker)
    except KeyboardInterrupt:
        interrupted = True  # report what finished; the servers were stopped on the way out
    tables = sections(runs, options, checked, bare)
    print(render(header, options.skipped, tables, notes(runs, options, checked, bare)), flush=True)
    errors = [f"{run.backend} {error}" for run in runs for error in run.errors()]
    if checked is not None and checked.error:
        errors.append(f"validation: {checked.error}")
    if bare is not None and bare.error:
        errors.append(f"reference: {bare.error}")
    document = {
        "format": FORMAT_VERSION,
        "header": header,
        "environment": env,
        "complete": not interrupted and not errors,
        "errors": errors,
        "skipped": list(options.skipped),
        "config": {
            "ingest": asdict(options.ingest),
            "propagation": asdict(options.propagation),
            "modes": list(options.modes),
            "validation": asdict(options.validation),
            "discovered": asdict(options.discovered),
            "broker": asdict(options.broker),
            "reference": asdict(options.reference),
            "workers": options.workers,
            "derivation": options.derivation,
        },
        "tables": {section.name: section_json(section, rows) for section, rows in tables},
        "notes": {
            run.backend: {
                "ingest": run.ingest.summary if run.ingest else None,
                "ingest_log_problems": run.ingest.log_problems[:50] if run.ingest else [],
                "propagation": {
                    r.mode: {"notes": r.notes(), "worker": r.worker, "label": r.label}
                    for r in run.propagation
                },
                "discovered": run.discovered.notes(options.discovered) if run.discovered else None,
                "broker": {b.row: b.notes() for b in run.broker},
            }
            for run in runs
        }
        | ({"local": {"validation": checked.notes(options.validation)}} if checked else {})
        | ({reference.BACKEND: {"reference": bare.notes()}} if bare else {}),
    }
    path = write_run(options.name, document)
    print(f"results: {path}")
    if interrupted:
        print("bench interrupted; the servers were stopped", file=sys.stderr)
        return 130
    if errors:
        print("bench finished with errors:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    return 0
