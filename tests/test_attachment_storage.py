"""Attachment content in storage (issue 12): content larger than MongoDB's 16 MiB document
limit is kept in chunks, on every back end; attachments are written before the statements, so
that a retry of a request that failed half way completes it."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import bson
import pytest

from lrs.storage.attachments import CHUNK_BYTES, AttachmentRepository
from tests.conftest import LRS, statement
from tests.test_attachments_api import attachment, multipart

MONGODB_DOCUMENT_LIMIT = 16 * 1024 * 1024


async def post_with(lrs: LRS, data: bytes, statement_id: str | None = None) -> Any:
    body = statement(attachments=[attachment(data, "application/octet-stream")])
    if statement_id:
        body["id"] = statement_id
    content, content_type = multipart(body, [(data, "application/octet-stream")])
    return await lrs.client.post(
        "/xapi/statements", content=content, headers={"Content-Type": content_type}
    )


async def fetched_attachment(lrs: LRS, statement_id: str) -> bytes | None:
    """The attachment part of GET ?statementId=...&attachments=true, or None without one."""
    response = await lrs.client.get(
        "/xapi/statements", params={"statementId": statement_id, "attachments": "true"}
    )
    assert response.status_code == 200, response.text
    boundary = response.headers["Content-Type"].split("boundary=")[1].strip('"').encode()
    parts = response.content.split(b"--" + boundary)[1:-1]
    if len(parts) < 2:
        return None
    return parts[1].split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]


async def test_attachment_over_16_mib_is_stored_in_chunks_that_fit_every_back_end(
    lrs: LRS,
) -> None:
    """An attachment larger than one MongoDB document (16 MiB) is stored and served back
    byte for byte; no stored document exceeds the limit."""
    data = os.urandom(17 * 1024 * 1024)
    response = await post_with(lrs, data)
    assert response.status_code == 200, response.text
    (statement_id,) = response.json()
    assert await fetched_attachment(lrs, statement_id) == data
    docs = await lrs.services.database["attachments"].find({})
    assert len(docs) == 1 + -(-len(data) // CHUNK_BYTES)  # the head and its chunks
    assert max(len(bson.encode(doc)) for doc in docs) < MONGODB_DOCUMENT_LIMIT


@pytest.mark.parametrize("failing", ["attachment write", "statement write"])
async def test_attachments_are_written_before_statements_so_a_retry_completes(
    lrs: LRS, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A write fails half way (the process dies, the database refuses): nothing is
    acknowledged, and the client's retry stores the statement with its attachment, complete.
    (Were the statement stored first, the retry would find it stored and skip the attachment.)"""
    data = b"attachment of a request that failed half way" * 1000

    async def fail(*args: Any) -> None:
        raise RuntimeError("the database went away")

    def failing_commit(*args: Any) -> Any:  # the statements' unit of work fails
        raise RuntimeError("the database went away")
        yield

    if failing == "attachment write":
        monkeypatch.setattr(AttachmentRepository, "put", fail)
    else:
        import lrs.storage.statements as statement_storage

        monkeypatch.setattr(statement_storage, "commit_batch", failing_commit)
    statement_id = "5c1e4b7a-0d3f-4e2a-9b8c-7d6e5f4a3b2c"
    response = await post_with(lrs, data, statement_id)
    assert response.status_code == 500
    monkeypatch.undo()
    response = await post_with(lrs, data, statement_id)
    assert response.status_code == 200, response.text
    assert await fetched_attachment(lrs, statement_id) == data


async def test_a_retry_stores_an_attachment_an_earlier_write_lost(lrs: LRS) -> None:
    """A statement stored while its attachment was not (what earlier versions could leave
    behind): re-sending the same request answers as before and stores the attachment."""
    data = b"lost once" * 100
    statement_id = "6d2f5c8b-1e4a-4f3b-8c9d-8e7f6a5b4c3d"
    assert (await post_with(lrs, data, statement_id)).status_code == 200
    await lrs.services.database["attachments"].delete_many({})
    assert await fetched_attachment(lrs, statement_id) is None
    assert (await post_with(lrs, data, statement_id)).status_code == 200
    assert await fetched_attachment(lrs, statement_id) == data


# --- the repository ----------------------------------------------------------------------------


@pytest.fixture
def attachments(lrs: LRS) -> AttachmentRepository:
    return AttachmentRepository(lrs.services.database["attachments"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_put_is_idempotent_and_get_many_returns_each_once(
    attachments: AttachmentRepository,
) -> None:
    small, large = b"small", os.urandom(2 * CHUNK_BYTES + 7)
    for _ in range(2):
        await attachments.put("s", sha(small), "text/plain", small)
        await attachments.put("s", sha(large), "application/octet-stream", large)
    found = await attachments.get_many("s", [sha(small), sha(large), sha(large), "missing"])
    assert sorted((d["sha2"], d["content_type"], d["data"]) for d in found) == sorted(
        [
            (sha(small), "text/plain", small),
            (sha(large), "application/octet-stream", large),
        ]
    )
    assert await attachments.get_many("other store", [sha(small)]) == []
    assert await attachments.collection.count({"store": "s"}) == 1 + 1 + 3


async def test_a_put_cut_short_is_invisible_and_completed_by_the_next(
    attachments: AttachmentRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks first, the head last: a put that dies before its head leaves nothing visible,
    and putting the same content again completes it."""
    data = os.urandom(CHUNK_BYTES + 1)
    update_one = attachments.collection.update_one
    calls = 0

    async def die_at_the_head(filter: Any, update: Any, **kw: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:  # two chunks written, then the head
            raise RuntimeError("killed")
        return await update_one(filter, update, **kw)

    monkeypatch.setattr(attachments.collection, "update_one", die_at_the_head)
    with pytest.raises(RuntimeError):
        await attachments.put("s", sha(data), "application/octet-stream", data)
    monkeypatch.undo()
    assert await attachments.get_many("s", [sha(data)]) == []
    await attachments.put("s", sha(data), "application/octet-stream", data)
    (found,) = await attachments.get_many("s", [sha(data)])
    assert found["data"] == data


async def test_the_inline_layout_of_earlier_versions_is_read(
    attachments: AttachmentRepository,
) -> None:
    data = b"written by an earlier version"
    await attachments.collection.update_one(
        {"store": "s", "sha2": sha(data)},
        {"$setOnInsert": {"content_type": "text/plain", "data": data}},
        upsert=True,
    )
    (found,) = await attachments.get_many("s", [sha(data)])
    assert found == {"sha2": sha(data), "content_type": "text/plain", "data": data}
