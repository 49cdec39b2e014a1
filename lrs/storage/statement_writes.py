"""Writing a statement batch all-or-nothing (design notes 1.2), as one unit of work.

A batch's statements become visible to readers, to the equivalence check of other requests and
to the outbox only once the whole batch has committed, so a batch that fails (a conflict, a
crash) leaves nothing anyone could have seen or acknowledged.

- **Embedded store** (`Context.atomic`): the unit runs in one SQLite transaction under the
  write lock: check ids, insert, apply voiding, write the outbox entries, commit. Nothing to add.
- **MongoDB and the in-memory double** (no transactions needed): a small protocol.
  1. A batch document in `statement_batches` (state `pending`, the ids, a lease) registers the
     write; `X-Experience-API-Consistent-Through` stays below the oldest registered batch.
  2. The statements are inserted with `voided: null`: invisible to every reader (readers ask
     for `voided` false or true), but holding their ids in the unique index.
  3. An id held by another pending batch is waited for: committed, it is compared as stored;
     aborted (or its lease expired: its writer died), its documents are removed and the id is
     free. A conflict aborts our own batch: our invisible documents are deleted.
  4. Commit point: the batch document's state moves `pending` -> `committed` in one atomic
     compare-and-set; a writer whose lease was taken over by then fails (503), nothing shown.
  5. Finish (idempotent): the statements become visible (`voided` false, or true when a
     voiding statement already names them), voiding is applied, reference chains refreshed,
     the outbox entries written, the batch document removed. A writer that dies after step 4
     leaves a committed batch that the recovery sweep finishes (`recover_batches`).
  The request is acknowledged only after step 5.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from lrs.storage import outbox
from lrs.storage.database import DuplicateKeys
from lrs.storage.federation import has_destinations_work
from lrs.storage.statement_docs import (
    MAX_REFERENCE_DEPTH,
    SUMMARY_FIELDS,
    DocumentDraft,
    chain_link,
    complete_document,
    draft_document,
    is_voiding,
    terms,
)
from lrs.storage.unit import (
    Context,
    Sleep,
    StoredClock,
    Work,
    delete_many,
    find,
    find_one,
    insert_many,
    insert_one,
    update_many,
    update_one,
)
from lrs.xapi.jsontext import parse_stored
from lrs.xapi.timestamps import format_micros

STATEMENTS = "statements"
BATCHES = "statement_batches"
# Every collection a batch's write may touch (`Database.run(writes=...)`): on the embedded
# store, the batch then waits for no writer of the derived file (progress).
BATCH_WRITES = frozenset({STATEMENTS, BATCHES, outbox.COLLECTION})
_INSERT_ROUNDS = 20  # ids freed by aborted batches are retried at most this often
_WAIT_SECONDS = 0.005  # between looks at another writer's pending batch

# (stored statement, candidate) -> whether the candidate is the same statement (Data 2.3.1)
Equivalence = Callable[[dict[str, Any], dict[str, Any]], bool]


class StatementConflict(Exception):
    """A statement id already exists with different content."""

    def __init__(self, statement_id: str) -> None:
        super().__init__(f"statement {statement_id} already exists with different content")
        self.statement_id = statement_id


class VoidingAVoid(Exception):
    """A voiding statement targets another voiding statement (Data 2.3.2)."""


class WriteLeaseLost(Exception):
    """The batch took longer than its lease and another writer aborted it: nothing was stored;
    the client may retry."""


@dataclass
class Committed:
    fresh: list[dict[str, Any]]  # the statements newly stored (equivalent re-sends left out)
    stored_key: int
    token: str | None  # names the batch's outbox entries; None when nothing new was stored
    # Whether the batch left a `forward` entry: not where its store had no destination when it
    # committed (embedded store only; see `_commit_atomic`).
    forward: bool = True


def commit_batch(
    context: Context,
    store: str,
    statements: list[dict[str, Any]],
    equivalent: Equivalence,
    lease_micros: int,
    drafts: dict[str, DocumentDraft] | None = None,
) -> Work[Committed]:
    """Store complete statements (id, authority, version set; `stored`, and `timestamp` where
    missing, are set here from the batch's stored key) all-or-nothing; see the module doc.
    `drafts`: their documents drafted beforehand (`draft_documents`), else drafted here."""
    if drafts is None:
        drafts = draft_documents(statements)
    if context.atomic:
        return (yield from _commit_atomic(store, statements, equivalent, drafts))
    return (yield from _commit_protocol(store, statements, equivalent, lease_micros, drafts))


def draft_documents(statements: list[dict[str, Any]]) -> dict[str, DocumentDraft]:
    """What can be built of the statements' documents before their batch takes its stored
    key (on the embedded store, before it takes the write lock), by statement id."""
    return {s["id"]: draft_document(s) for s in statements}


def _stamp(statements: list[dict[str, Any]], key: int) -> str:
    stored = format_micros(key)
    for statement in statements:
        statement["stored"] = stored
        statement.setdefault("timestamp", stored)
    return stored


def _commit_atomic(
    store: str,
    statements: list[dict[str, Any]],
    equivalent: Equivalence,
    drafts: dict[str, DocumentDraft],
) -> Work[Committed]:
    key = yield StoredClock()
    stored = _stamp(statements, key)
    ids = [s["id"] for s in statements]
    existing = yield find(
        STATEMENTS, {"store": store, "id": {"$in": ids}}, projection={"statement": 1, "id": 1}
    )
    fresh = _drop_equivalent(statements, {doc["id"]: doc for doc in existing}, equivalent)
    yield from _check_voiding(store, fresh)
    if not fresh:
        return Committed([], key, None)
    fresh_ids = [s["id"] for s in fresh]
    voided = yield from voided_by_visible(store, fresh_ids)
    docs = []
    for statement in fresh:
        draft = drafts[statement["id"]]
        chain = yield from _chain(store, draft.target)
        voided_now = statement["id"] in voided
        doc = complete_document(store, draft, stored, key, voided_now, chain)
        doc["_id"] = ObjectId()
        docs.append(doc)
    yield insert_many(STATEMENTS, docs)
    token = str(ObjectId())
    # No destination, no fan-out to owe: one created after this commit catches up on what was
    # stored since its creation (lrs.federation.forwarding), and none can be created during
    # it (the write lock). Not so elsewhere, where the statements become visible after this.
    forward = yield from has_destinations_work(store)
    yield from _after_visible(
        store,
        token,
        fresh_ids,
        _voiding_targets(drafts[i] for i in fresh_ids),
        key,
        forward=forward,
    )
    return Committed(fresh, key, token, forward)


def _commit_protocol(
    store: str,
    statements: list[dict[str, Any]],
    equivalent: Equivalence,
    lease_micros: int,
    drafts: dict[str, DocumentDraft],
) -> Work[Committed]:
    token = str(ObjectId())
    ids = [s["id"] for s in statements]
    lower = yield StoredClock()
    yield insert_one(
        BATCHES,
        {
            "_id": token,
            "store": store,
            "ids": ids,
            "state": "pending",
            "stored_key": lower,
            "expires": lower + lease_micros,
        },
    )
    try:
        # Taken once the batch is registered: a reader that did not see the registration
        # computed its Consistent-Through before this key.
        key = yield StoredClock()
        stored = _stamp(statements, key)
        existing = yield from _settled(store, ids, token)
        fresh = _drop_equivalent(statements, existing, equivalent)
        yield from _check_voiding(store, fresh)
        docs: dict[str, dict[str, Any]] = {}
        for statement in fresh:
            draft = drafts[statement["id"]]
            chain = yield from _chain(store, draft.target)
            doc = complete_document(store, draft, stored, key, None, chain)
            doc["_id"], doc["batch"] = ObjectId(), token
            docs[statement["id"]] = doc
        yield from _insert_pending(store, token, docs, statements, equivalent)
        fresh = [s for s in fresh if s["id"] in docs]
        if not fresh:
            yield delete_many(BATCHES, {"_id": token})
            return Committed([], key, None)
        committed = yield update_one(
            BATCHES,
            {"_id": token, "state": "pending"},
            {"$set": {"state": "committed", "ids": list(docs)}},
        )
        if not committed:
            raise WriteLeaseLost("the batch outlived its lease and was aborted; nothing stored")
    except Exception:  # (not on cancellation: a batch left pending is aborted at its lease end)
        yield from _abort(store, token, ids)
        raise
    yield from _finish(store, token, list(docs), key)
    return Committed(fresh, key, token)


def _insert_pending(
    store: str,
    token: str,
    docs: dict[str, dict[str, Any]],
    statements: list[dict[str, Any]],
    equivalent: Equivalence,
) -> Work[None]:
    """Insert our invisible documents; an id another batch took meanwhile is settled like one
    found before (equivalent: dropped from `docs`; different: conflict; aborted: retried)."""
    by_id = {s["id"]: s for s in statements}
    todo = list(docs.values())
    for _ in range(_INSERT_ROUNDS):
        if not todo:
            return
        try:
            yield insert_many(STATEMENTS, todo)
            return
        except DuplicateKeys as exc:
            refused = [todo[i]["id"] for i in exc.indexes]
        existing = yield from _settled(store, refused, token)
        for statement_id in refused:
            if statement_id in existing:
                _drop_equivalent([by_id[statement_id]], existing, equivalent)
                del docs[statement_id]
        todo = [docs[i] for i in refused if i in docs]
    raise WriteLeaseLost("statement ids kept being taken by other batches")


def _settled(store: str, ids: list[str], token: str) -> Work[dict[str, dict[str, Any]]]:
    """The stored documents of these ids that belong to committed batches (waiting for pending
    ones of other writers to end; removing those whose writer died)."""
    found: dict[str, dict[str, Any]] = {}
    pending = list(ids)
    unregistered: set[Any] = set()  # documents seen once without their batch document
    while pending:
        docs = yield find(
            STATEMENTS,
            {"store": store, "id": {"$in": pending}},
            projection={"statement": 1, "id": 1, "voided": 1, "batch": 1},
        )
        waiting = []
        for doc in docs:
            if doc.get("batch") == token:
                continue  # ours, from an earlier round
            if doc["voided"] is not None:
                found[doc["id"]] = doc
                continue
            state = yield find_one(BATCHES, {"_id": doc.get("batch")})
            if state is not None and state["state"] == "committed":
                found[doc["id"]] = doc  # visible as soon as its writer finishes
                continue
            if state is not None and state["state"] == "pending":
                now = yield StoredClock()
                if now > state["expires"]:
                    yield from _abort(state["store"], state["_id"], state["ids"])
            elif state is None and doc["_id"] in unregistered:
                # Still invisible, and no batch claims it: left by a writer that died while
                # removing its batch. Nobody was ever told of it.
                yield delete_many(STATEMENTS, {"_id": doc["_id"], "voided": None})
            elif state is None:
                unregistered.add(doc["_id"])  # its writer may have just finished: look again
            waiting.append(doc["id"])
        if waiting == pending:
            yield Sleep(_WAIT_SECONDS)
        pending = waiting
    return found


def _abort(store: str, token: str, ids: list[str]) -> Work[None]:
    """Remove a batch that did not commit: its invisible documents, then its registration.
    Only a pending batch is aborted (compare-and-set), so a commit that won the race stands."""
    still = yield update_one(
        BATCHES,
        {"_id": token, "state": {"$in": ["pending", "aborted"]}},
        {"$set": {"state": "aborted"}},
    )
    if not still:
        return
    yield delete_many(
        STATEMENTS, {"store": store, "id": {"$in": ids}, "batch": token, "voided": None}
    )
    yield delete_many(BATCHES, {"_id": token})


def _finish(store: str, token: str, ids: list[str], key: int) -> Work[None]:
    """Steps after the commit point, each safe to repeat (a recovery may run them again)."""
    voided = yield from voided_by_visible(store, ids)
    for flag, chosen in ((False, [i for i in ids if i not in voided]), (True, sorted(voided))):
        if chosen:
            yield update_many(
                STATEMENTS,
                {"store": store, "id": {"$in": chosen}, "batch": token, "voided": None},
                {"$set": {"voided": flag}, "$unset": {"batch": ""}},
            )
    # A voiding statement that became visible meanwhile found ours still invisible.
    late = yield from voided_by_visible(store, [i for i in ids if i not in voided])
    if late:
        yield update_many(
            STATEMENTS,
            {"store": store, "id": {"$in": sorted(late)}, "voids": None},
            {"$set": {"voided": True}},
        )
    docs = yield find(
        STATEMENTS,
        {"store": store, "id": {"$in": ids}, "voids": {"$ne": None}},
        projection={"voids": 1},
    )
    yield from _after_visible(store, token, ids, [doc["voids"] for doc in docs], key)
    yield delete_many(BATCHES, {"_id": token})


def recover_batches(store_now: int) -> Work[int]:
    """Finish committed batches and abort pending ones whose writers died (lease expired).
    Returns the number of batches dealt with."""
    expired = yield find(BATCHES, {"expires": {"$lt": store_now}}, limit=100)
    for batch in expired:
        if batch["state"] == "committed":
            yield from _finish(batch["store"], batch["_id"], batch["ids"], batch["stored_key"])
        else:
            yield from _abort(batch["store"], batch["_id"], batch["ids"])
    return len(expired)


def oldest_batch() -> Work[int | None]:
    """The stored key of the oldest batch still being written (None: none is)."""
    docs = yield find(BATCHES, {}, projection={"stored_key": 1}, sort=[("stored_key", 1)], limit=1)
    return docs[0]["stored_key"] if docs else None


# --- shared steps --------------------------------------------------------------------------------


def _drop_equivalent(
    statements: list[dict[str, Any]],
    existing: dict[str, dict[str, Any]],
    equivalent: Equivalence,
) -> list[dict[str, Any]]:
    fresh = []
    for statement in statements:
        doc = existing.get(statement["id"])
        if doc is None:
            fresh.append(statement)
        elif not equivalent(parse_stored(doc["statement"]), statement):
            raise StatementConflict(statement["id"])
    return fresh


def _check_voiding(store: str, fresh: list[dict[str, Any]]) -> Work[None]:
    """A voiding statement may not target another voiding statement (Data 2.3.2)."""
    targets = {s["id"]: s["object"]["id"].lower() for s in fresh if is_voiding(s)}
    if not targets:
        return
    in_batch = {s["id"]: s for s in fresh}
    stored = yield find(
        STATEMENTS,
        {"store": store, "id": {"$in": sorted(set(targets.values()))}},
        projection={"id": 1, "voids": 1},
    )
    voiders = {doc["id"] for doc in stored if doc.get("voids") is not None}
    for voider, target in targets.items():
        if (target in in_batch and is_voiding(in_batch[target])) or target in voiders:
            raise VoidingAVoid(
                f"statement {voider} voids {target}, which is itself a voiding statement; "
                "voiding statements cannot be voided"
            )


def _voiding_targets(drafts: Iterable[DocumentDraft]) -> list[str]:
    return [d.target for d in drafts if d.voiding and d.target]


def voided_by_visible(store: str, ids: list[str]) -> Work[set[str]]:
    """Those of `ids` that a visible voiding statement targets: voided, or (elsewhere than on
    the embedded store, between two steps of its voiding statement's write) about to be. One
    seek in the partial index over voiding statements: the statements themselves are not
    read."""
    if not ids:
        return set()
    voiders = yield find(
        STATEMENTS,
        {"store": store, "voids": {"$in": ids}, "voided": False},
        projection={"voids": 1},
    )
    return {doc["voids"] for doc in voiders}


def _after_visible(
    store: str,
    token: str,
    ids: list[str],
    voiding_targets: list[str],
    key: int,
    forward: bool = True,
) -> Work[None]:
    """Once the statements are visible: void their targets, refresh the reference chains that
    lead to them or to those targets, and record the outbox entries."""
    if voiding_targets:
        # A voiding statement is never voided itself (checked above), hence `voids: None`.
        yield update_many(
            STATEMENTS,
            {"store": store, "id": {"$in": voiding_targets}, "voids": None},
            {"$set": {"voided": True}},
        )
    yield from _refresh_referrers(store, [*ids, *voiding_targets])
    with contextlib.suppress(DuplicateKeys):  # written by an earlier run of these steps
        yield outbox.add(token, store, ids, key, outbox.KINDS if forward else ("derive",))


# --- StatementRef chains -------------------------------------------------------------------------
# A statement whose object is a StatementRef carries summaries of the statements it references
# (transitively), so "statements referencing a match" is one indexed query.


def _chain(store: str, target: str | None) -> Work[list[dict[str, Any]]]:
    # A voided target stays in the chain: statements targeting it, the voiding statement
    # included, still match filters through it (Communication 2.1.4.s1.b2); the voided
    # statement itself is never returned. One not committed yet does not count (its batch
    # refreshes the chains that lead to it once it is visible).
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    while target and target not in seen and len(chain) < MAX_REFERENCE_DEPTH:
        seen.add(target)
        doc = yield find_one(STATEMENTS, {"store": store, "id": target})
        if doc is None or doc["voided"] is None:
            break
        chain.append(chain_link(doc))
        target = doc.get("ref_target")
    return chain


def _refresh_referrers(store: str, changed_ids: list[str]) -> Work[None]:
    """Recompute the chains of statements that reference (directly or not) changed ones. A
    chain that changes changes, in turn, the chains of the statements referencing its owner:
    with A -> B -> C stored as A, B, then C, C's arrival extends B's chain, and through it A's."""
    pending = list(changed_ids)
    # Each round reaches one link further back; no chain is longer than MAX_REFERENCE_DEPTH.
    for _ in range(MAX_REFERENCE_DEPTH + 1):
        if not pending:
            return
        # Two simple indexed queries rather than one $or (which the embedded store would scan).
        referrers: dict[Any, dict[str, Any]] = {}
        for field in ("ref_target", "ref_chain_ids"):
            docs = yield find(
                STATEMENTS,
                {"store": store, field: {"$in": pending}},
                projection={"id": 1, "ref_chain_ids": 1, **{name: 1 for name in SUMMARY_FIELDS}},
            )
            for doc in docs:
                referrers[doc["_id"]] = doc
        pending = []
        for doc in referrers.values():
            chain = yield from _chain(store, doc.get("ref_target"))
            if [link["id"] for link in chain] == (doc.get("ref_chain_ids") or []):
                # Statements are immutable: the same links summarise the same statements
                # (voiding one changes no chain).
                continue
            update: dict[str, Any] = {"$set": {"terms": terms([doc, *chain])}}
            if chain:
                update["$set"]["ref_chain"] = chain
                update["$set"]["ref_chain_ids"] = [link["id"] for link in chain]
            else:  # left out when empty (see complete_document)
                update["$unset"] = {"ref_chain": "", "ref_chain_ids": ""}
            yield update_one(STATEMENTS, {"_id": doc["_id"]}, update)
            pending.append(doc["id"])


def new_statement_id() -> str:
    return str(uuid.uuid4())
