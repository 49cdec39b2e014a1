"""The data commands of `lrs`: import a cmi5 course, rebuild progress, import and export
statements (JSON Lines), erase a learner. Each opens the configured store directly.

The embedded store may be shared with a running `lrs serve` (SQLite locks it), but in that mode
live progress events go through each process's own in-process bus: dashboards connected to the
server see changes made here after their next reload, not live.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lrs.api.errors import XAPIError
from lrs.config import get_settings
from lrs.ingestion import IngestionError
from lrs.progress.catalogue import CourseStructureError, parse_cmi5_course
from lrs.services import Services, build_services
from lrs.storage.credentials import Credential
from lrs.storage.erasure import erase_learner
from lrs.storage.statements import StatementQuery


class ProgressBar:
    """A one-line progress bar on stderr (only when stderr is a terminal, else a final line)."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = time.monotonic()
        self.live = sys.stderr.isatty()

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.live:
            sys.stderr.write("\r" + self._line())
            sys.stderr.flush()

    def _line(self) -> str:
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        if self.total:
            filled = int(30 * min(self.done, self.total) / self.total)
            bar = "#" * filled + "-" * (30 - filled)
            return f"{self.label} [{bar}] {self.done}/{self.total} ({rate:,.0f}/s)"
        return f"{self.label} {self.done} ({rate:,.0f}/s)"

    def close(self) -> None:
        sys.stderr.write(("\r" if self.live else "") + self._line() + "\n")


async def _open() -> Services:
    services = build_services(get_settings())
    await services.start(background=False)
    return services


def _operator(store: str, name: str, public_url: str) -> Credential:
    """The authority recorded on statements the CLI stores."""
    authority = {
        "objectType": "Agent",
        "name": name,
        "account": {"homePage": f"{public_url.rstrip('/')}/cli", "name": name},
    }
    return Credential(
        key="cli", store=store, scopes=frozenset({"all"}), name=name, authority=authority
    )


async def import_course(path: Path, store: str, profile: str) -> int:
    services = await _open()
    try:
        try:
            course = parse_cmi5_course(path.read_bytes(), profile)
        except CourseStructureError as exc:
            print(f"{path}: invalid cmi5 course structure: {exc}", file=sys.stderr)
            return 1
        await services.catalogue.put(store, course)
        changed = await services.deriver.derive_course(store, course.id)
        print(f"imported {course.id}: {len(course.modules)} module(s); {changed} record(s) changed")
        return 0
    finally:
        await services.close()


async def rebuild_progress(store: str, course_id: str | None) -> int:
    """Re-derive progress from the statements, course by course."""
    services = await _open()
    try:
        courses = await services.catalogue.list(store)
        if course_id is not None:
            courses = [c for c in courses if c.id == course_id]
            if not courses:
                print(f"no course {course_id} in store {store}", file=sys.stderr)
                return 1
        bar = ProgressBar("rebuilding", sum(len(c.modules) for c in courses))
        changed = 0
        for course in courses:
            for module in course.modules:
                changed += await services.deriver.derive_module(store, module)
                bar.advance()
            await services.catalogue.mark_derived(store, course.id, course.extra["updated_key"])
        bar.close()
        print(f"{changed} progress record(s) changed")
        return 0
    finally:
        await services.close()


def _batches(lines: IO[str], size: int) -> Iterator[tuple[int, list[Any]]]:
    batch: list[Any] = []
    first_line = 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not batch:
            first_line = number
        try:
            batch.append(json.loads(line))
        except ValueError as exc:
            raise ValueError(f"line {number}: not JSON: {exc}") from exc
        if len(batch) == size:
            yield first_line, batch
            batch = []
    if batch:
        yield first_line, batch


async def import_statements(path: Path, store: str, batch_size: int) -> int:
    """Store statements from a JSON Lines file, a batch at a time. A batch either stores
    completely or not at all; the first failing batch stops the import with its line number,
    and re-running the command is safe (statements already stored are no-ops)."""
    services = await _open()
    credential = _operator(store, "lrs import", services.settings.public_url)
    stored = 0
    try:
        total = sum(1 for line in path.open(encoding="utf-8") if line.strip())
        bar = ProgressBar("importing", total)
        with path.open(encoding="utf-8") as lines:
            try:
                for first_line, batch in _batches(lines, batch_size):
                    try:
                        await services.ingestion.store(credential, batch, version="1.0.3")
                    except IngestionError as exc:
                        bar.close()
                        print(
                            f"{path}: batch starting at line {first_line}: {exc.message}",
                            file=sys.stderr,
                        )
                        return 1
                    stored += len(batch)
                    bar.advance(len(batch))
            except ValueError as exc:
                bar.close()
                print(f"{path}: {exc}", file=sys.stderr)
                return 1
        bar.close()
        # Derive what was imported before exiting (the embedded mode has no worker).
        changed = 0
        while entries := [
            entry
            for entry in await services.statements.outbox.pending("derive", limit=200)
            if entry["store"] == store
        ]:
            for entry in entries:
                changed += await services.deriver.derive_statements(
                    store, list(entry["ids"]), [entry["_id"]]
                )
        print(f"imported {stored} statement(s); {changed} progress record(s) changed")
        return 0
    finally:
        await services.close()


async def export_statements(store: str, output: IO[str], page_size: int = 1000) -> int:
    """Every non-voided statement of a store, oldest first, one JSON object per line."""
    services = await _open()
    try:
        bar = ProgressBar("exporting", None)
        after = None
        while True:
            page = await services.statements.query(
                store, StatementQuery(ascending=True, limit=page_size, after=after)
            )
            for statement in page.statements:
                output.write(json.dumps(statement, ensure_ascii=False) + "\n")
            bar.advance(len(page.statements))
            if page.next_cursor is None:
                break
            after = page.next_cursor
        bar.close()
        return 0
    finally:
        await services.close()


async def erase(store: str, learner: str, confirm: bool) -> int:
    from lrs.api.learners import learner_key_of

    try:
        key = learner_key_of(learner)
    except XAPIError as exc:
        print(f"learner: {exc.message}", file=sys.stderr)
        return 1
    services = await _open()
    try:
        counts = await erase_learner(services.database, store, key, dry_run=not confirm)
    finally:
        await services.close()
    verb = "erased" if confirm else "would erase (dry run; add --yes to erase)"
    print(f"{verb} for {key}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    return 0
