"""Document storage for the State, Activity Profile and Agent Profile resources.

One collection, `documents`, holds all three kinds. A document is addressed by
(store, kind, activity_id, agent, registration, document_id); the parts a kind does not use are
"" so that the unique index treats them the same on every back end (no null semantics).
Bodies are kept as bytes with the content type they arrived with, the SHA-1 of the bytes
(the ETag) and `updated` in microseconds (Last-Modified and the `since` filter).

Concurrency: every write is conditional on the `revision` it read. Two writers that read the
same revision cannot both succeed: the loser re-reads and re-evaluates its preconditions (so an
If-Match writer gets 412 rather than silently overwriting), and a merge (POST) is re-applied to
the newer document instead of losing the other writer's keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lrs.storage.database import Collection, Database, DuplicateKeys
from lrs.xapi.timestamps import monotonic_now_micros

STATE = "state"
ACTIVITY_PROFILE = "activity_profile"
AGENT_PROFILE = "agent_profile"
KINDS = (STATE, ACTIVITY_PROFILE, AGENT_PROFILE)

# MongoDB refuses BSON documents over 16 MiB; stay clear of it with room for the other fields.
MAX_CONTENT_BYTES = 15 * 1024 * 1024
# Optimistic retries before a write gives up (only under heavy contention on one document).
_MAX_ATTEMPTS = 8


class DocumentTooLarge(Exception):
    """The content exceeds what one stored document can hold."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the document is {size} bytes; the limit is {MAX_CONTENT_BYTES} bytes")
        self.size = size


class DocumentContention(Exception):
    """Other writers kept changing the document between our read and our write."""


@dataclass(frozen=True)
class DocumentScope:
    """The set of documents one list GET or multiple-document DELETE addresses.

    `registration` None means "any registration" (State: Activity + Agent [+ registration if
    specified]); "" means "stored without a registration".
    """

    kind: str
    activity_id: str = ""
    agent: str = ""
    registration: str | None = ""

    def filter(self, store: str) -> dict[str, Any]:
        query: dict[str, Any] = {
            "store": store,
            "kind": self.kind,
            "activity_id": self.activity_id,
            "agent": self.agent,
        }
        if self.registration is not None:
            query["registration"] = self.registration
        return query


@dataclass(frozen=True)
class DocumentKey:
    """One document: its scope (with a definite registration) and its id."""

    kind: str
    document_id: str
    activity_id: str = ""
    agent: str = ""
    registration: str = ""

    def filter(self, store: str) -> dict[str, Any]:
        return {
            "store": store,
            "kind": self.kind,
            "activity_id": self.activity_id,
            "agent": self.agent,
            "registration": self.registration,
            "document_id": self.document_id,
        }


@dataclass(frozen=True)
class StoredDocument:
    document_id: str
    content: bytes
    content_type: str
    etag: str  # lowercase hex SHA-1 of `content`, unquoted
    updated: int  # microseconds since the epoch
    revision: int
    handle: Any  # the storage _id, for conditional writes


@dataclass(frozen=True)
class NewContent:
    content: bytes
    content_type: str


def sha1_hex(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


def _from_doc(doc: dict[str, Any]) -> StoredDocument:
    return StoredDocument(
        document_id=doc["document_id"],
        content=bytes(doc["content"]),
        content_type=doc["content_type"],
        etag=doc["etag"],
        updated=doc["updated"],
        revision=doc["revision"],
        handle=doc["_id"],
    )


# Decides what to write given the current document (None when absent); raises to refuse.
Decide = Callable[[StoredDocument | None], NewContent]
# Checks a deletion given the current document; raises to refuse.
Check = Callable[[StoredDocument | None], None]


class DocumentRepository:
    def __init__(self, database: Database) -> None:
        self.documents: Collection = database["documents"]

    async def ensure_indexes(self) -> None:
        await self.documents.create_index(
            [
                ("store", 1),
                ("kind", 1),
                ("activity_id", 1),
                ("agent", 1),
                ("registration", 1),
                ("document_id", 1),
            ],
            unique=True,
            name="document_key",
        )
        # list GETs with `since`, and Last-Modified of a list
        await self.documents.create_index(
            [("store", 1), ("kind", 1), ("activity_id", 1), ("agent", 1), ("updated", -1)]
        )

    # --- reads -----------------------------------------------------------------------------

    async def get(self, store: str, key: DocumentKey) -> StoredDocument | None:
        doc = await self.documents.find_one(key.filter(store))
        return _from_doc(doc) if doc else None

    async def list_ids(
        self, store: str, scope: DocumentScope, since: int | None = None
    ) -> tuple[list[str], int | None]:
        """Ids in the scope updated after `since` (exclusive), and the latest `updated` among
        them (None when there are none)."""
        query = scope.filter(store)
        if since is not None:
            query["updated"] = {"$gt": since}
        docs = await self.documents.find(
            query, projection={"document_id": 1, "updated": 1}, sort=[("document_id", 1)]
        )
        # The same id can exist under several registrations when the scope spans them.
        ids = list(dict.fromkeys(doc["document_id"] for doc in docs))
        latest = max((doc["updated"] for doc in docs), default=None)
        return ids, latest

    # --- writes ----------------------------------------------------------------------------

    async def modify(self, store: str, key: DocumentKey, decide: Decide) -> StoredDocument:
        """Read the document, let `decide` compute the new content (or raise), and write it
        only if nobody changed the document in between; otherwise start again."""
        for _ in range(_MAX_ATTEMPTS):
            current = await self.get(store, key)
            new = decide(current)
            if len(new.content) > MAX_CONTENT_BYTES:
                raise DocumentTooLarge(len(new.content))
            if current is None:
                written = await self.create_if_absent(store, key, new)
            else:
                written = await self.replace_if_unchanged(store, key, current, new)
            if written is not None:
                return written
        raise DocumentContention(f"document {key.document_id!r} kept changing; retry")

    async def create_if_absent(
        self, store: str, key: DocumentKey, new: NewContent
    ) -> StoredDocument | None:
        """Insert the document; None if one with the same key exists already."""
        doc = {
            **key.filter(store),
            "content": new.content,
            "content_type": new.content_type,
            "etag": sha1_hex(new.content),
            "updated": monotonic_now_micros(),
            "revision": 1,
        }
        try:
            await self.documents.insert_one(doc)
        except DuplicateKeys:
            return None
        return _from_doc(doc)

    async def replace_if_unchanged(
        self, store: str, key: DocumentKey, current: StoredDocument, new: NewContent
    ) -> StoredDocument | None:
        """Replace the content if the document is still at `current.revision`; None if not."""
        fields = {
            "content": new.content,
            "content_type": new.content_type,
            "etag": sha1_hex(new.content),
            "updated": monotonic_now_micros(),
            "revision": current.revision + 1,
        }
        matched = await self.documents.update_one(
            {"_id": current.handle, "revision": current.revision}, {"$set": fields}
        )
        if not matched:
            return None
        return _from_doc({**key.filter(store), **fields, "_id": current.handle})

    async def delete(self, store: str, key: DocumentKey, check: Check) -> bool:
        """Delete the document if `check` allows it; True if a document was deleted."""
        for _ in range(_MAX_ATTEMPTS):
            current = await self.get(store, key)
            check(current)
            if current is None:
                return False
            deleted = await self.documents.delete_many(
                {"_id": current.handle, "revision": current.revision}
            )
            if deleted:
                return True
        raise DocumentContention(f"document {key.document_id!r} kept changing; retry")

    async def delete_all(self, store: str, scope: DocumentScope) -> int:
        return await self.documents.delete_many(scope.filter(store))
