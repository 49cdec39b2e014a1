"""The fixed-format results table and the JSON results file.

The column names and their order are part of the interface: runs are compared by grepping
rows (`grep post-batch`) or by diffing `bench/results/<benchmark>-<backend>.json`. Add new
columns at the end only.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.stats import PhaseResult

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# (column name, width); right-aligned except the first three.
COLUMNS: tuple[tuple[str, int], ...] = (
    ("backend", 9),
    ("phase", 24),
    ("unit", 13),
    ("requests", 9),
    ("statements", 11),
    ("seconds", 9),
    ("rate", 10),
    ("p50_ms", 9),
    ("p99_ms", 9),
    ("max_ms", 9),
)
_LEFT = {"backend", "phase", "unit"}


def _cell(name: str, width: int, value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.1f}" if name == "rate" else f"{value:.2f}"
    text = str(value)
    return text.ljust(width) if name in _LEFT else text.rjust(width)


def table(benchmark: str, backend: str, phases: Sequence[PhaseResult], summary: dict) -> str:
    """The table: a header line, one row per phase, then `key=value` summary lines; every
    line starts with the benchmark name so several runs in one log stay separable."""
    prefix = f"[{benchmark}]"
    lines = [prefix + " " + " ".join(_cell(n, w, n) for n, w in COLUMNS).rstrip()]
    for phase in phases:
        row = {"backend": backend, **phase.as_dict()}
        lines.append(prefix + " " + " ".join(_cell(n, w, row[n]) for n, w in COLUMNS).rstrip())
    for key, value in summary.items():
        lines.append(f"{prefix} {backend.ljust(9)} {'summary'.ljust(24)} {key}={value}")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """What the figures depend on besides the code: machine, interpreter, commit."""
    try:
        # Read-only: which commit (and whether the tree had local changes) was measured.
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=RESULTS_DIR.parent,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": commit,
    }


def write_json(benchmark: str, backend: str, payload: dict[str, Any]) -> Path:
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
