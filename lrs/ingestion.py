"""The statement ingestion use case: validate, store all-or-nothing, learn activity definitions,
hand the new batch to derivation and federation. Called by the Statements resource, by the
progress API (waivers and resets are statements) and by federation pulling, so all three store
statements the same way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lrs.auth import has_scope
from lrs.observability import Metrics
from lrs.storage.activities import ActivityRepository
from lrs.storage.combined_writes import CombinedWrites
from lrs.storage.credentials import Credential
from lrs.storage.statement_writes import (
    Committed,
    StatementConflict,
    VoidingAVoid,
    WriteLeaseLost,
)
from lrs.storage.statements import StatementRepository
from lrs.xapi.attachments import (
    AttachmentError,
    AttachmentPart,
    match_attachments,
    require_file_urls,
)
from lrs.xapi.comparison import statements_equivalent
from lrs.xapi.signature import verify_statement_signatures
from lrs.xapi.validation import StatementValidationError, validate_statement

log = logging.getLogger("lrs.ingestion")

# Told of every committed batch that stored something new: (store, statement ids, outbox
# token). Must not wait on I/O: it runs before the request is answered.
AfterStore = Callable[[str, list[str], str], None]


@dataclass(frozen=True)
class Stored:
    """What storing a batch gave: every statement of the request as completed (ids set), and,
    where the store can tell it without another read, an X-Experience-API-Consistent-Through
    value that is true once the batch is acknowledged (None: ask the store)."""

    statements: list[dict[str, Any]]
    consistent_through: int | None


class IngestionError(Exception):
    """A request the LRS refuses; `status` is the HTTP status to answer (nothing was stored)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Ingestion:
    statements: StatementRepository
    activities: ActivityRepository
    metrics: Metrics
    after_store: list[AfterStore]  # derivation: every batch that stored something new
    # Federation: those batches that left a `forward` entry (lrs.storage.statement_writes).
    after_forward: list[AfterStore] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._writes = CombinedWrites(self.statements.insert_batch, self._committed)

    async def store(
        self,
        credential: Credential,
        statements: list[Any],
        *,
        version: str,
        as_list: bool = True,
        parts: list[AttachmentPart] | None = None,
    ) -> Stored:
        """Validate, complete and store a batch all-or-nothing (see `Stored`). Raises
        IngestionError (400, 409, 503)."""
        parts = parts or []
        prepared = prepare(statements, as_list, parts, credential, version)
        # Compare what the client sent, not what the LRS added (timestamp, stored, authority):
        # differences the LRS itself caused are not conflicts (Data 2.3.1).
        sent = {
            p["id"]: {**original, "id": p["id"]}
            for p, original in zip(prepared, statements, strict=True)
        }

        def equivalent(existing: dict[str, Any], candidate: dict[str, Any]) -> bool:
            return statements_equivalent(existing, sent[candidate["id"]], xapi_version=version)

        try:
            if parts:  # attachments go first (StatementRepository.insert_batch): alone
                committed = await self.statements.insert_batch(
                    credential.store,
                    prepared,
                    equivalent,
                    [(p.sha2, p.content_type, p.data) for p in parts],
                )
                self._committed(credential.store, committed)
            else:
                committed = await self._writes.write(credential.store, prepared, equivalent)
        except StatementConflict as exc:
            raise IngestionError(409, str(exc)) from exc
        except VoidingAVoid as exc:
            raise IngestionError(400, str(exc)) from exc
        except WriteLeaseLost as exc:
            raise IngestionError(503, str(exc)) from exc
        if committed.fresh:
            self.metrics.statements_stored.inc(len(committed.fresh))
            await self.activities.record_from_statements(
                credential.store, committed.fresh, has_scope(credential, "define")
            )
        return Stored(prepared, self.statements.consistent_through_after(committed))

    def _committed(self, store: str, committed: Committed) -> None:
        """A write stored new statements (of one request or several, lrs.storage.combined_writes):
        hand them to derivation and federation, before any request of it is answered.

        The statements are stored, so a hand-over that fails is logged, not answered with an
        error (the client would send again what is already stored), and does not keep the
        others from theirs: the batch's outbox entries stay, and the sweep hands it over later."""
        if not committed.fresh:
            return
        ids = [s["id"] for s in committed.fresh]
        assert committed.token is not None
        hooks = self.after_store + (self.after_forward if committed.forward else [])
        for hook in hooks:
            try:
                hook(store, ids, committed.token)
            except Exception:
                log.exception("could not hand %d stored statements over (%r)", len(ids), hook)


def prepare(
    statements: list[Any],
    as_list: bool,
    parts: list[AttachmentPart],
    credential: Credential,
    version: str,
) -> list[dict[str, Any]]:
    """Validate and complete every statement of a request (id, authority, version; `stored`
    and a missing `timestamp` are set when the batch is written); raises IngestionError(400) on
    the first problem. The statements are JSON values (a parser's output, or built of dicts,
    lists, strings, numbers, booleans and None): the validator recognises parts it saw valid
    before by their JSON text (`validate_statement`'s `parsed_json`)."""
    for index, statement in enumerate(statements):
        path = f"statements[{index}]" if as_list else "statement"
        try:
            validate_statement(statement, version=version, path=path, parsed_json=True)
        except StatementValidationError as exc:
            raise IngestionError(400, str(exc)) from exc
    try:
        if parts:
            by_sha2 = match_attachments(statements, parts)
        else:
            require_file_urls(statements)
            by_sha2 = {}
        for statement in statements:
            verify_statement_signatures(statement, by_sha2, xapi_version=version)
    except AttachmentError as exc:
        raise IngestionError(400, f"attachments: {exc}") from exc

    seen: set[str] = set()
    prepared = []
    default_version = "2.0.0" if version == "2.0.0" else "1.0.0"
    for statement in statements:
        statement = dict(statement)
        statement_id = str(statement.get("id") or uuid.uuid4()).lower()
        if statement_id in seen:
            raise IngestionError(400, f"the batch contains the statement id {statement_id} twice")
        seen.add(statement_id)
        statement["id"] = statement_id
        statement["authority"] = credential.authority
        statement.setdefault("version", default_version)
        prepared.append(statement)
    return prepared
