"""Attachment content, content-addressed (store, sha2), in pieces that fit every back end.

MongoDB refuses documents over 16 MiB, so content larger than `CHUNK_BYTES` is kept as chunk
documents next to a head document that describes it (a GridFS-like layout):

- head: {store, sha2, content_type, length, chunks: n}, written last;
- chunk i: {store, sha2: "<sha2>.<i>", chunk_of: sha2, data}.

Smaller content stays inline in the head ({..., data}), the layout earlier versions wrote,
which is still read as it is. Both kinds live in the `attachments` collection and share its
unique (store, sha2) index, so no new index is needed and chunks are fetched by key.

`put` is idempotent: chunks are upserted first and the head only after them, so a head is
never visible before its content, and a write cut short is completed by the next `put` of the
same content (a retried request). Content that is already complete is not written again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from pymongo.errors import DuplicateKeyError

from lrs.storage.database import Collection

CHUNK_BYTES = 4 * 1024 * 1024


def _chunk_key(sha2: str, index: int) -> str:
    return f"{sha2}.{index}"


class AttachmentRepository:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("store", 1), ("sha2", 1)], unique=True)

    async def put(self, store: str, sha2: str, content_type: str, data: bytes) -> None:
        """Store the content under its hash unless it is there already (complete)."""
        head = await self.collection.find_one(
            {"store": store, "sha2": sha2}, projection={"sha2": 1}
        )
        if head is not None:
            return
        if len(data) <= CHUNK_BYTES:
            await self._upsert(
                {"store": store, "sha2": sha2}, {"content_type": content_type, "data": data}
            )
            return
        count = 0
        for offset in range(0, len(data), CHUNK_BYTES):
            await self._upsert(
                {"store": store, "sha2": _chunk_key(sha2, count)},
                {"chunk_of": sha2, "data": data[offset : offset + CHUNK_BYTES]},
            )
            count += 1
        await self._upsert(
            {"store": store, "sha2": sha2},
            {"content_type": content_type, "length": len(data), "chunks": count},
        )

    async def get_many(self, store: str, sha2s: Iterable[str]) -> list[dict[str, Any]]:
        """{sha2, content_type, data} of each stored attachment among `sha2s` (absent ones are
        left out)."""
        wanted = sorted(set(sha2s))
        if not wanted:
            return []
        heads = await self.collection.find({"store": store, "sha2": {"$in": wanted}})
        found = []
        for head in heads:
            if "data" in head:
                data = bytes(head["data"])
            else:
                data = await self._assemble(store, head)
                if data is None:
                    continue
            found.append({"sha2": head["sha2"], "content_type": head["content_type"], "data": data})
        return found

    async def _assemble(self, store: str, head: dict[str, Any]) -> bytes | None:
        keys = [_chunk_key(head["sha2"], i) for i in range(head["chunks"])]
        chunks = {
            doc["sha2"]: bytes(doc["data"])
            for doc in await self.collection.find({"store": store, "sha2": {"$in": keys}})
        }
        if len(chunks) != len(keys):
            return None  # never written by `put`, which writes the head last
        data = b"".join(chunks[key] for key in keys)
        return data if len(data) == head["length"] else None

    async def _upsert(self, key: dict[str, Any], fields: dict[str, Any]) -> None:
        # $setOnInsert: content-addressed, so what is there already is the same content.
        # A concurrent put of the same content may insert it first.
        with contextlib.suppress(DuplicateKeyError):
            await self.collection.update_one(key, {"$setOnInsert": fields}, upsert=True)
