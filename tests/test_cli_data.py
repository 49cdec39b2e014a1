"""The data commands of `lrs` (issue 6): courses import, progress rebuild, statements import
and export, erase-learner; each run as a real subprocess on an embedded store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_progress_api import CMI5_XML

AU1 = "http://example.com/cmi5/au1"
AU2 = "http://example.com/cmi5/au2"
BLOCK = "http://example.com/cmi5/block1"
LEARNER = {"objectType": "Agent", "mbox": "mailto:cli@example.com"}


def lrs(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRS_")}
    env.update({"LRS_DATA_DIR": str(tmp_path / "data"), "LRS_STORAGE": "embedded"})
    return subprocess.run(
        [sys.executable, "-m", "lrs.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )


def statement(verb: str, obj: str, **extra: object) -> dict:
    return {
        "actor": LEARNER,
        "verb": {"id": f"http://adlnet.gov/expapi/verbs/{verb}"},
        "object": {"objectType": "Activity", "id": obj},
        "timestamp": "2026-03-01T10:00:00Z",
        **extra,
    }


def test_import_course_statements_rebuild_export_and_erase(tmp_path: Path) -> None:
    course_file = tmp_path / "cmi5.xml"
    course_file.write_bytes(CMI5_XML)
    result = lrs(tmp_path, "courses", "import", str(course_file))
    assert result.returncode == 0, result.stderr
    assert "1 module" in result.stdout

    lines = [statement("completed", AU1), statement("passed", AU2, result={"success": True})]
    lines += [statement("experienced", f"http://example.com/extra/{i}") for i in range(5)]
    source = tmp_path / "statements.jsonl"
    source.write_text("\n".join(json.dumps(s) for s in lines) + "\n")
    result = lrs(tmp_path, "import", "statements", str(source), "--batch", "3")
    assert result.returncode == 0, result.stderr
    assert "imported 7 statement(s)" in result.stdout

    result = lrs(tmp_path, "progress", "rebuild")
    assert result.returncode == 0, result.stderr

    exported = tmp_path / "out.jsonl"
    result = lrs(tmp_path, "export", "statements", "--output", str(exported))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    # Oldest first: the first batch (3 statements sharing one `stored`) holds the completion.
    assert len(rows) == 7
    assert any(row["verb"]["id"].endswith("completed") for row in rows[:3])
    assert all(row["id"] and row["stored"] for row in rows)

    # The exported file re-imports as a no-op: the same ids with the same content.
    result = lrs(tmp_path, "import", "statements", str(exported))
    assert result.returncode == 0, result.stderr
    result = lrs(tmp_path, "export", "statements")
    assert len(result.stdout.splitlines()) == 7

    dry = lrs(tmp_path, "erase-learner", "--learner", "mbox:mailto:cli@example.com")
    assert dry.returncode == 0 and "dry run" in dry.stdout and "7 statements" in dry.stdout
    done = lrs(tmp_path, "erase-learner", "--learner", json.dumps(LEARNER), "--yes")
    assert done.returncode == 0 and "erased" in done.stdout
    assert lrs(tmp_path, "export", "statements").stdout == ""


def test_import_reports_the_failing_batch_and_stores_none_of_it(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    good = statement("completed", AU1)
    source.write_text(json.dumps(good) + "\n" + json.dumps({"actor": LEARNER}) + "\n")
    result = lrs(tmp_path, "import", "statements", str(source), "--batch", "10")
    assert result.returncode == 1
    assert "line 1" in result.stderr and "verb" in result.stderr
    assert lrs(tmp_path, "export", "statements").stdout == ""


def test_invalid_course_file_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "cmi5.xml"
    broken.write_text("<courseStructure><course></oops>")
    result = lrs(tmp_path, "courses", "import", str(broken))
    assert result.returncode == 1 and "line 1" in result.stderr
