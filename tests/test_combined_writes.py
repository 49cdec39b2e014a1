"""Statement batches that arrive while a write is in flight are written together
(lrs.storage.combined_writes), and all-or-nothing still holds per request."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from lrs.storage.combined_writes import CombinedWrites
from lrs.storage.statement_writes import Committed, Equivalence, StatementConflict
from tests.conftest import LRS, statement


class FakeStore:
    """Writes batches as the repository would, one at a time, each held until `release`d;
    refuses a batch holding a statement id listed in `conflicting` (nothing of it stored)."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []  # ids of each write, in order
        self.stored: dict[str, dict[str, Any]] = {}
        self.conflicting: set[str] = set()
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(
        self, store: str, statements: list[dict[str, Any]], equivalent: Equivalence
    ) -> Committed:
        self.writes.append([s["id"] for s in statements])
        await self.gate.wait()
        for s in statements:
            if s["id"] in self.conflicting:
                raise StatementConflict(s["id"])
        fresh = []
        for s in statements:
            if s["id"] in self.stored:
                assert equivalent(self.stored[s["id"]], s)
            else:
                fresh.append(s)
        for s in fresh:
            self.stored[s["id"]] = s
        return Committed(fresh, len(self.writes), f"token{len(self.writes)}")


def batch(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i} for i in ids]


def same(existing: dict[str, Any], candidate: dict[str, Any]) -> bool:
    return True


async def _queued_behind_a_write(
    writes: CombinedWrites, fake: FakeStore, *batches: list[dict[str, Any]]
) -> list[Any]:
    """Start a first write and hold it; queue `batches` meanwhile; release; the outcomes."""
    fake.gate.clear()
    first = asyncio.create_task(writes.write("s", batch("first"), same))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(writes.write("s", b, same)) for b in batches]
    await asyncio.sleep(0)
    fake.gate.set()
    return await asyncio.gather(first, *queued, return_exceptions=True)


async def test_batches_queued_behind_a_write_are_written_as_one() -> None:
    fake = FakeStore()
    commits: list[list[str]] = []
    writes = CombinedWrites(
        fake.write, lambda store, c: commits.append([s["id"] for s in c.fresh]), in_flight=1
    )
    first, a, b, c = await _queued_behind_a_write(
        writes, fake, batch("a1", "a2"), batch("b1"), batch("c1")
    )
    assert fake.writes == [["first"], ["a1", "a2", "b1", "c1"]]
    # Each request hears of its own statements; derivation and federation of the whole write.
    assert [s["id"] for s in a.fresh] == ["a1", "a2"] and [s["id"] for s in c.fresh] == ["c1"]
    assert a.token == b.token == c.token == "token2" and a.stored_key == 2
    assert commits == [["first"], ["a1", "a2", "b1", "c1"]]


async def test_a_batch_that_finds_no_write_in_flight_is_written_at_once_alone() -> None:
    fake = FakeStore()
    writes = CombinedWrites(fake.write, lambda store, c: None)
    await writes.write("s", batch("a"), same)
    await writes.write("s", batch("b"), same)
    assert fake.writes == [["a"], ["b"]]


async def test_a_failing_combined_write_is_written_again_request_by_request() -> None:
    """The conflicting request fails alone; the others are stored, each in its own write."""
    fake = FakeStore()
    fake.conflicting = {"b1"}
    commits: list[list[str]] = []
    writes = CombinedWrites(
        fake.write, lambda store, c: commits.append([s["id"] for s in c.fresh]), in_flight=1
    )
    _, a, b, c = await _queued_behind_a_write(
        writes, fake, batch("a1"), batch("b1", "b2"), batch("c1")
    )
    assert isinstance(b, StatementConflict)
    assert [s["id"] for s in a.fresh] == ["a1"] and [s["id"] for s in c.fresh] == ["c1"]
    assert fake.writes[1:] == [["a1", "b1", "b2", "c1"], ["a1"], ["b1", "b2"], ["c1"]]
    assert sorted(fake.stored) == ["a1", "c1", "first"]
    assert commits == [["first"], ["a1"], ["c1"]]


async def test_batches_sharing_a_statement_id_are_not_combined() -> None:
    fake = FakeStore()
    writes = CombinedWrites(fake.write, lambda store, c: None, in_flight=1)
    _, a, b, c = await _queued_behind_a_write(
        writes, fake, batch("x", "y"), batch("z", "x"), batch("w")
    )
    assert fake.writes == [["first"], ["x", "y", "w"], ["z", "x"]]
    assert [s["id"] for s in b.fresh] == ["z"]  # x was stored by the first request


async def test_a_combined_write_takes_at_most_max_statements() -> None:
    fake = FakeStore()
    writes = CombinedWrites(fake.write, lambda store, c: None, max_statements=3, in_flight=1)
    await _queued_behind_a_write(writes, fake, batch("a1", "a2"), batch("b1", "b2"), batch("c1"))
    assert fake.writes == [["first"], ["a1", "a2", "c1"], ["b1", "b2"]]


async def test_a_request_that_goes_away_still_has_its_batch_written() -> None:
    fake = FakeStore()
    writes = CombinedWrites(fake.write, lambda store, c: None, in_flight=1)
    fake.gate.clear()
    first = asyncio.create_task(writes.write("s", batch("first"), same))
    await asyncio.sleep(0)
    gone = asyncio.create_task(writes.write("s", batch("gone"), same))
    other = asyncio.create_task(writes.write("s", batch("other"), same))
    await asyncio.sleep(0)
    gone.cancel()
    fake.gate.set()
    await first
    assert [s["id"] for s in (await other).fresh] == ["other"]
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert sorted(fake.stored) == ["first", "gone", "other"]


async def test_concurrent_posts_keep_their_own_outcomes(lrs: LRS) -> None:
    """Through the API, on each back end: concurrent POSTs, one of them conflicting with a
    stored statement; it alone is refused, every other one is stored and derived."""
    stored_id = str(uuid.uuid4())
    posted = await lrs.client.post("/xapi/statements", json={**statement(), "id": stored_id})
    assert posted.status_code == 200
    failed = {"id": "http://adlnet.gov/expapi/verbs/failed", "display": {"en-US": "failed"}}
    conflicting = {**statement(verb=failed), "id": stored_id}
    others = [statement() for _ in range(12)]
    answers = await asyncio.gather(
        *[lrs.client.post("/xapi/statements", json=s) for s in others[:6]],
        lrs.client.post("/xapi/statements", json=conflicting),
        *[lrs.client.post("/xapi/statements", json=s) for s in others[6:]],
    )
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * 6 + [409] + [200] * 6
    new_ids = [a.json()[0] for i, a in enumerate(answers) if i != 6]
    for statement_id in new_ids:
        got = await lrs.client.get("/xapi/statements", params={"statementId": statement_id})
        assert got.status_code == 200
    kept = await lrs.client.get("/xapi/statements", params={"statementId": stored_id})
    assert kept.json()["verb"]["id"] == statement()["verb"]["id"]
    await lrs.services.dispatcher.idle()
    owed = await lrs.services.statements.outbox.pending("derive")
    assert owed == []


@pytest.mark.parametrize("path", ["combined writes", "with attachments (written alone)"])
async def test_a_failing_hand_over_neither_fails_the_request_nor_skips_the_others(
    lrs: LRS, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The statements are stored when the hand-over to derivation and federation runs: a hook
    that raises is logged; the request is answered as stored and the later hooks still run,
    whichever way the batch was written."""
    from tests.test_attachment_storage import post_with

    handed: list[list[str]] = []

    def broken(store: str, ids: list[str], token: str) -> None:
        raise RuntimeError("hand-over refused")

    lrs.services.after_store[:0] = [broken]
    lrs.services.after_store.append(lambda store, ids, token: handed.append(ids))
    if path == "combined writes":
        answer = await lrs.client.post("/xapi/statements", json=statement())
    else:
        answer = await post_with(lrs, b"some bytes")
    assert answer.status_code == 200, answer.text
    assert handed == [answer.json()]
    assert "could not hand 1 stored statements over" in caplog.text
    got = await lrs.client.get("/xapi/statements", params={"statementId": answer.json()[0]})
    assert got.status_code == 200
