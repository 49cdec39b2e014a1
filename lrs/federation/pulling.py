"""Pulling: copy what a source LRS holds, from a checkpoint, page by page.

A poll reads `GET statements?since=<checkpoint>&ascending=true` (plus the source's own filter
parameters) and follows `more` links. Each page is stored with the statements' original ids
(an equivalent statement already here is a no-op; a different one under the same id is recorded
as an error and left alone) before the checkpoint moves past it.

The checkpoint is the `stored` time of the last statement stored, but never later than the
source's X-Experience-API-Consistent-Through: statements stored before that instant are all
visible, later ones may still appear with an earlier `stored`. When a poll read to the end, the
next one asks `since` the checkpoint. When it stopped between two pages (time budget, crash),
the next one asks from one millisecond before it: `since` is exclusive, and the page may have
ended in the middle of statements sharing one `stored` value (a batch); the overlap is re-read
as no-ops. Such a batch may fill more pages than one poll has time for, and every poll would
then re-read its first pages again and never get past it: a poll stops for lack of time only
once it moved the checkpoint forward.

The admin API may set the checkpoint (`since`), or change what it refers to (parameters,
endpoint, username), while a poll runs: that bumps the source's `checkpoint_rev`, and a poll
writes its checkpoint only while the revision is still the one it started with. Otherwise the
admin's change wins: the poll stops, and the next one, due at once, starts from there. A poll
asked for while one runs (`poll_requests` moved on) likewise follows right after it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from lrs.federation.client import PeerClient, PeerConfig, PeerError, is_2x, parts_for
from lrs.federation.peers import peer_config
from lrs.federation.secrets import SecretKeys
from lrs.ingestion import IngestionError
from lrs.storage.credentials import Credential
from lrs.storage.federation import SourceRepository, now_micros
from lrs.xapi.attachments import AttachmentPart
from lrs.xapi.timestamps import TimestampError, format_timestamp, from_micros, parse_timestamp
from lrs.xapi.timestamps import to_micros as _to_micros

log = logging.getLogger("lrs.federation")

_OVERLAP_MICROS = 1000

# (credential, statements, xAPI version, attachment parts) -> stored; raises XAPIError (400/409)
# lrs.ingestion.Ingestion.store: (credential, statements, *, version, parts).
StoreBatch = Callable[..., Awaitable[Any]]
_REFUSED = (400, 409)  # the statement itself is refused (invalid, conflicting): recorded
# (store, ids) -> the ids among them already stored
KnownIds = Callable[[str, list[str]], Awaitable[set[str]]]


@dataclass(frozen=True)
class PullSettings:
    timeout: float = 30.0
    lease: float = 120.0
    pass_budget: float = 30.0  # seconds one poll may keep following `more` links


@dataclass
class PullReport:
    pages: int = 0
    fetched: int = 0
    stored: int = 0  # new statements
    rejected: int = 0  # conflicting or invalid statements, recorded as errors
    # Stopped before the end (time budget, lease lost, or the checkpoint was set meanwhile).
    more: bool = False


def _micros(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        return _to_micros(parse_timestamp(text))
    except TimestampError:
        return None


def _error(message: str, status: int | None = None) -> dict[str, Any]:
    return {"message": message[:2000], "status": status, "at_key": now_micros()}


def iso(micros: int | None) -> str | None:
    return format_timestamp(from_micros(micros)) if micros is not None else None


def source_credential(source: dict[str, Any], public_url: str) -> Credential:
    """The authority pulled statements are stored under: the source, as this LRS knows it."""
    return Credential(
        key=f"source:{source['_id']}",
        store=source["store"],
        scopes=frozenset({"statements/write"}),
        name=f"federation source {source.get('name') or source['_id']}",
        authority={
            "objectType": "Agent",
            "account": {"homePage": public_url.rstrip("/"), "name": f"source:{source['_id']}"},
        },
    )


class Puller:
    def __init__(
        self,
        sources: SourceRepository,
        keys: SecretKeys,
        store_batch: StoreBatch,
        known_ids: KnownIds,
        public_url: str,
        settings: PullSettings,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.sources = sources
        self.keys = keys
        self.store_batch = store_batch
        self.known_ids = known_ids
        self.public_url = public_url
        self.settings = settings
        self.transport = transport

    async def peer_config(self, doc: dict[str, Any]) -> PeerConfig:
        return peer_config(doc, await self.keys.box(), self.settings.timeout)

    async def pull(self, source_id: str) -> PullReport | None:
        """One poll of a source under its lease; None when it is not due, disabled or busy."""
        owner = uuid.uuid4().hex
        now = now_micros()
        extra: dict[str, Any] = {"enabled": True, "next_poll_key": {"$lte": now}}
        source = await self.sources.leases.acquire(source_id, owner, self.settings.lease, extra)
        if source is None:
            return None
        report = PullReport()
        fields: dict[str, Any] = {"last_poll_key": now}
        try:
            await self._poll(source, owner, report)
            fields["last_success_key"] = now_micros()
            fields["last_error"] = None
        except PeerError as exc:
            fields["last_error"] = _error(str(exc), exc.status)
            log.info("pulling from %s failed: %s", source.get("name") or source_id, exc)
        except Exception as exc:  # our side (storage): the checkpoint stays before the page
            fields["last_error"] = _error(f"{type(exc).__name__}: {exc}")
            log.exception("pulling from %s failed", source.get("name") or source_id)
        finally:
            fields["last_fetched"] = report.fetched
            fields["last_stored"] = report.stored
            # Straight back when the pass stopped early, else after the poll interval.
            interval = 0 if report.more else float(source.get("poll_interval") or 60)
            await self.sources.finish_poll(
                source_id,
                fields,
                now_micros() + int(interval * 1e6),
                source.get("poll_requests"),
            )
            await self.sources.leases.release(source_id, owner)
        return report

    async def _poll(self, source: dict[str, Any], owner: str, report: PullReport) -> None:
        deadline = time.monotonic() + self.settings.pass_budget
        async with PeerClient(await self.peer_config(source), self.transport) as client:
            version = await client.version_for(None)
            params: dict[str, str] = {
                **(source.get("params") or {}),
                "ascending": "true",
                "attachments": "true",  # inline attachment data is part of the statement
            }
            checkpoint = source.get("checkpoint_key")
            started_at = checkpoint
            if checkpoint is not None:
                overlap = 0 if source.get("checkpoint_complete") else _OVERLAP_MICROS
                params["since"] = iso(checkpoint - overlap) or ""
            more: str | None = None
            while True:
                answer, result = await client.get_statements(version, params, more)
                if result is None:
                    raise PeerError(f"GET statements: {answer.describe()}", answer.status)
                statements = [s for s in result["statements"] if isinstance(s, dict)]
                stored, rejected = await self._store_page(source, statements, answer.parts)
                report.pages += 1
                report.fetched += len(statements)
                report.stored += stored
                report.rejected += rejected
                checkpoint = self._advance(checkpoint, statements, answer.consistent_through)
                more = result.get("more") or None
                last_page = not more or not statements
                # Only now that the page is stored does the checkpoint move past it; and not
                # over a `since` (or other parameters) the admin API set meanwhile: the next
                # poll starts from there instead.
                if not await self.sources.advance_checkpoint(
                    source["_id"],
                    source.get("checkpoint_rev"),
                    {
                        "checkpoint_key": checkpoint,
                        "checkpoint_complete": last_page,
                        "consistent_through": answer.consistent_through,
                    },
                    {"pulled": stored, "rejected": rejected, "pages": 1},
                ):
                    report.more = True
                    return
                if last_page:
                    return
                moved = checkpoint is not None and (started_at is None or checkpoint > started_at)
                if time.monotonic() >= deadline and moved:
                    report.more = True
                    return
                if not await self.sources.leases.renew(
                    source["_id"], owner, self.settings.lease, extra={"enabled": True}
                ):
                    report.more = True
                    return

    @staticmethod
    def _advance(
        checkpoint: int | None, statements: list[dict[str, Any]], consistent_through: str | None
    ) -> int | None:
        stored = [k for k in (_micros(s.get("stored")) for s in statements) if k is not None]
        if not stored:
            return checkpoint
        candidate = max(stored)
        through = _micros(consistent_through)
        if through is not None:
            candidate = min(candidate, through)
        return candidate if checkpoint is None else max(checkpoint, candidate)

    async def _store_page(
        self, source: dict[str, Any], statements: list[dict[str, Any]], parts: list[AttachmentPart]
    ) -> tuple[int, int]:
        """Store a page; returns (new statements, rejected statements)."""
        if not statements:
            return 0, 0
        store = source["store"]
        ids = [str(s.get("id", "")).lower() for s in statements]
        known = await self.known_ids(store, ids)
        credential = source_credential(source, self.public_url)
        by_sha2 = {part.sha2.lower(): part for part in parts}
        rejected: set[str] = set()
        for version, run in _runs(statements):
            try:
                await self.store_batch(
                    credential, run, version=version, parts=parts_for(run, by_sha2)
                )
                continue
            except IngestionError as exc:
                if exc.status not in _REFUSED:
                    raise  # nothing stored, the checkpoint stays: the next poll tries again
            # One of them is refused: store the others one by one.
            for statement in run:
                try:
                    await self.store_batch(
                        credential,
                        [statement],
                        version=version,
                        parts=parts_for([statement], by_sha2),
                    )
                except IngestionError as exc:
                    if exc.status not in _REFUSED:
                        raise
                    statement_id = str(statement.get("id", "")).lower()
                    rejected.add(statement_id)
                    await self.sources.record_error(
                        store, source["_id"], statement_id or None, f"{exc.status}: {exc}"
                    )
        new = {i for i in ids if i and i not in known and i not in rejected}
        return len(new), len(rejected)


def _runs(statements: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive statements validated under the same xAPI version (their own)."""
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for statement in statements:
        version = "2.0.0" if is_2x(statement.get("version")) else "1.0.3"
        if runs and runs[-1][0] == version:
            runs[-1][1].append(statement)
        else:
            runs.append((version, [statement]))
    return runs
