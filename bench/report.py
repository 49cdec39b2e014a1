"""The fixed-format results table and the JSON results files.

The printed format is an interface: runs are compared by diffing two outputs or grepping rows
(`grep '^\\[query\\]'`), so section names, row names, their order, column headers (which carry
the units) and widths never depend on the figures. A row that was not measured still appears,
with `-` in every column. Change the format only by adding columns at the end of a section,
sections at the end, or rows (printed by every run from then on), and bump FORMAT_VERSION when
you do.

    lrs-bench format=7 date=... commit=... tree=... cores=2 statements=100000 ...
    [ingest]      backend   phase                     requests  statements   seconds  ...
    [ingest]      embedded  post-batch-100                 990       99000    120.41  ...
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# 2: the header's `rate` per propagation mode, `workers`, `discovered` and `validations` at the
#    end of the header; the sections `validation` and `discovered` after `memory`.
# 3: the propagation mode `process` (a derivation process beside the API process): its row
#    between `inprocess` and `celery` in `propagation`, and `api-process` between
#    `api-inprocess` and `api-celery` in `memory`; the header's `derivation` (of the ingest and
#    discovered servers) after `workers`.
# 4: the header's `client` at the end: the load client, `aiohttp` (bench.client). Runs of
#    format 3 and before loaded the server through httpx, which took about four times the CPU
#    per request on the cores the server shares: their single-POST and propagation figures
#    are lower for it and do not compare with format 4's.
# 5: the section `broker` at the end: single POSTs to the production topology's API with Redis
#    up and with it down (bench.broker).
# 6: the section `reference` at the end: the same POSTs to a bare app that only validates and
#    inserts (bench.bare_app), issue 10's physical limit, measured in the same run.
# 7: the row `validate-recognised` at the end of `validation` (bench.validation).
FORMAT_VERSION = 7
MISSING = "-"

_TAG_WIDTH = 13  # "[propagation]"
_BACKEND_WIDTH = 9
_ROW_WIDTH = 24


@dataclass(frozen=True)
class Column:
    header: str  # printed as is, unit included; also the key in the JSON file
    key: str  # where the value is found in a row's values
    width: int
    decimals: int = 0  # for floats


@dataclass(frozen=True)
class Section:
    name: str
    row_header: str
    columns: tuple[Column, ...]


def _latency(prefix: str = "") -> tuple[Column, ...]:
    return tuple(
        Column(f"{prefix}{name}_ms", f"{prefix}{name}_ms", 10 + len(prefix), 1)
        for name in ("p50", "p99", "max")
    )


INGEST = Section(
    "ingest",
    "phase",
    (
        Column("requests", "requests", 9),
        Column("statements", "statements", 11),
        Column("seconds", "seconds", 9, 2),
        Column("statements/s", "rate", 13, 1),
        *_latency(),
    ),
)
QUERY = Section(
    "query",
    "filter",
    (
        Column("requests", "requests", 9),
        Column("returned/req", "per_request", 13, 1),
        Column("seconds", "seconds", 9, 2),
        Column("requests/s", "rate", 11, 1),
        *_latency(),
    ),
)
PROPAGATION = Section(
    "propagation",
    "mode",
    (
        Column("offered_st/s", "offered_rate", 13, 1),
        Column("sent_st/s", "sent_rate", 10, 1),
        Column("acked", "acked", 7),
        Column("visible", "visible", 8),
        Column("post_p50_ms", "post_p50_ms", 12, 1),
        Column("post_p99_ms", "post_p99_ms", 12, 1),
        Column("delay_p50_ms", "delay_p50_ms", 13, 1),
        Column("delay_p99_ms", "delay_p99_ms", 13, 1),
        Column("delay_max_ms", "delay_max_ms", 13, 1),
        Column("visible_st/s", "visible_rate", 13, 1),
        Column("drain_s", "drain_s", 8, 2),
    ),
)
MEMORY = Section("memory", "process", (Column("peak_rss_MiB", "peak_rss_mib", 13, 1),))
# Measured in the bench's own process: no server, no back end (the backend column says `local`).
VALIDATION = Section(
    "validation",
    "step",
    (
        Column("statements", "statements", 11),
        Column("seconds", "seconds", 9, 3),
        Column("us/statement", "us_per_statement", 13, 2),
    ),
)
DISCOVERED = Section(
    "discovered",
    "scenario",
    (
        Column("statements", "statements", 11),
        Column("post_seconds", "post_seconds", 13, 2),
        Column("statements/s", "rate", 13, 1),
        Column("post_p50_ms", "post_p50_ms", 12, 1),
        Column("post_p99_ms", "post_p99_ms", 12, 1),
        Column("drain_s", "drain_s", 9, 2),
        Column("rss_start_MiB", "rss_start_mib", 14, 1),
        Column("rss_after_post_MiB", "rss_after_post_mib", 19, 1),
        Column("rss_end_MiB", "rss_end_mib", 12, 1),
        Column("peak_rss_MiB", "peak_rss_mib", 13, 1),
    ),
)
# The production topology's API, Redis up and down (bench.broker): the ingest section's columns.
BROKER = Section("broker", "redis", INGEST.columns)
# The bare app (bench.reference): the ingest section's columns.
REFERENCE = Section("reference", "phase", INGEST.columns)
SECTIONS = (INGEST, QUERY, PROPAGATION, MEMORY, VALIDATION, DISCOVERED, BROKER, REFERENCE)

# (backend, row name, values or None when the row was not measured)
Row = tuple[str, str, Mapping[str, Any] | None]


def cell(column: Column, value: Any) -> str:
    """One right-aligned cell; None (not measured) prints as MISSING."""
    if value is None:
        text = MISSING
    elif isinstance(value, float):
        text = f"{value:.{column.decimals}f}"
    else:
        text = str(value)
    return text.rjust(column.width)


def _line(tag: str, backend: str, row: str, cells: Sequence[str]) -> str:
    head = f"{tag.ljust(_TAG_WIDTH)} {backend.ljust(_BACKEND_WIDTH)} {row.ljust(_ROW_WIDTH)}"
    return (head + " " + " ".join(cells)).rstrip()


def section_lines(section: Section, rows: Sequence[Row]) -> list[str]:
    """The section's header line, then one line per row, in the order given."""
    tag = f"[{section.name}]"
    lines = [
        _line(
            tag, "backend", section.row_header, [c.header.rjust(c.width) for c in section.columns]
        )
    ]
    for backend, name, values in rows:
        cells = [cell(c, None if values is None else values.get(c.key)) for c in section.columns]
        lines.append(_line(tag, backend, name, cells))
    return lines


def note_line(backend: str, where: str, text: str) -> str:
    """A `[notes]` line: facts that are not figures (checks, skips, errors)."""
    return f"{'[notes]'.ljust(_TAG_WIDTH)} {backend.ljust(_BACKEND_WIDTH)} {where} {text}"


def log_problems_note(problems: Sequence[str]) -> str:
    """The note on a server log's problem lines (bench.server.Server.problems): how many, and
    the first."""
    return f"server_log_problem_lines={len(problems)} first={problems[0][:200]}"


def header_line(info: Mapping[str, Any]) -> str:
    """The first line: what the figures depend on besides the code, `key=value`, in the
    caller's (fixed) key order. Values never contain spaces."""
    return "lrs-bench " + " ".join(f"{k}={str(v).replace(' ', '_')}" for k, v in info.items())


def render(
    info: Mapping[str, Any],
    skipped: Sequence[str],
    sections: Sequence[tuple[Section, Sequence[Row]]],
    notes: Sequence[str],
) -> str:
    """The whole printed report: header, skip lines, each section, then the notes."""
    lines = [header_line(info), *skipped]
    for section, rows in sections:
        lines.extend(section_lines(section, rows))
    lines.extend(notes)
    return "\n".join(lines)


def section_json(section: Section, rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """{backend: {row: {column header: value or None}}}: the table's content, same names."""
    out: dict[str, dict[str, Any]] = {}
    for backend, name, values in rows:
        out.setdefault(backend, {})[name] = (
            None if values is None else {c.header: values.get(c.key) for c in section.columns}
        )
    return out


def _git(*args: str) -> str | None:
    try:
        # --no-optional-locks: a read-only look that never takes the index lock, so a bench run
        # cannot disturb someone committing in the same checkout.
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=RESULTS_DIR.parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment() -> dict[str, Any]:
    """What the figures depend on besides the code: machine, interpreter, commit."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": _git("rev-parse", "HEAD"),
        "tree": "unknown" if status is None else ("modified" if status else "clean"),
    }


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_json(benchmark: str, backend: str, payload: dict[str, Any]) -> Path:
    """bench/results/<benchmark>-<backend>.json (used by bench.federation_soak)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{benchmark}-{backend}.json"
    document = {
        "benchmark": benchmark,
        "backend": backend,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


def write_run(name: str, document: dict[str, Any]) -> Path:
    """bench/results/<name>.json (the latest run of that name), and one line appended to
    bench/results/history.jsonl, so earlier runs stay at hand for comparison."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    with open(RESULTS_DIR / "history.jsonl", "a", encoding="utf-8") as history:
        history.write(json.dumps({"name": name, **document}, ensure_ascii=False) + "\n")
    return path
