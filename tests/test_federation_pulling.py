"""Pulling from a real source: a second instance of this LRS on a loopback port whose pages
hold 7 statements, so that every poll follows `more` links."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import federation_support as support
import pytest
from federation_support import Peer, Sender, eventually, make_statement, peer_settings

from lrs.federation.loopback import LoopbackLRS
from lrs.federation.pulling import Puller

sender = support.sender  # the fixture: pytest finds it by name here

PAGE = 7


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Peer]:
    lrs = LoopbackLRS(peer_settings(tmp_path, statement_page_size=PAGE))
    try:
        lrs.start()
        key, secret = lrs.credential(["statements/write", "statements/read"])
        yield Peer(lrs, key, secret)
    finally:
        lrs.close()


async def _create_source(sender: Sender, source: Peer, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "upstream",
        "endpoint": source.endpoint,
        "username": source.key,
        "password": source.secret,
        "poll_interval": 3600,  # polls come from the tests, through "poll now"
        **fields,
    }
    response = await sender.client.post("/admin/sources", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def _source(sender: Sender, source_id: str) -> dict[str, Any]:
    response = await sender.client.get(f"/admin/sources/{source_id}")
    assert response.status_code == 200
    return response.json()


async def _ids(sender: Sender) -> set[str]:
    docs = await sender.services.statements.statements.distinct("id", {"store": "default"})
    return set(docs)


async def _poll_now(sender: Sender, source_id: str) -> None:
    response = await sender.client.post(f"/admin/sources/{source_id}/poll")
    assert response.status_code == 202, response.text


async def test_pull_copies_more_than_a_page_then_only_what_is_new(
    sender: Sender, source: Peer
) -> None:
    queries: list[dict[str, list[str]]] = []
    source.lrs.chaos.on_request = lambda scope: (
        queries.append(parse_qs(scope["query_string"].decode()))
        if scope["method"] == "GET" and scope["path"].endswith("/statements")
        else None
    )
    first = [make_statement(i) for i in range(30)]
    for start in range(0, 30, 10):  # three batches: pages end inside batches
        await source.post(first[start : start + 10])
    created = await _create_source(sender, source)
    expected = {s["id"] for s in first}
    await eventually(lambda: _has(sender, expected), message="the first pull")
    await eventually(lambda: _polled(sender, created["id"], 30))
    after_first = await _source(sender, created["id"])
    assert after_first["pulled"] == 30 and after_first["rejected"] == 0
    assert after_first["pages"] == 5  # 7 + 7 + 7 + 7 + 2, following `more`
    assert after_first["last_fetched"] == 30 and after_first["last_error"] is None
    assert queries[0]["ascending"] == ["true"] and "since" not in queries[0]
    assert all("cursor" in q for q in queries[1:])

    second = [make_statement(100 + i) for i in range(5)]
    await source.post(second)
    await _poll_now(sender, created["id"])
    expected |= {s["id"] for s in second}
    await eventually(lambda: _has(sender, expected), message="the second pull")
    await eventually(lambda: _polled(sender, created["id"], 35))
    after_second = await _source(sender, created["id"])
    assert after_second["last_fetched"] == 5 and after_second["last_stored"] == 5
    assert after_second["pages"] == 6
    assert queries[5]["since"] == [after_first["checkpoint"]]
    assert after_second["checkpoint"] > after_first["checkpoint"]
    assert await _ids(sender) == expected


async def _has(sender: Sender, expected: set[str]) -> bool:
    return await _ids(sender) >= expected


async def _polled(sender: Sender, source_id: str, pulled: int) -> bool:
    doc = await _source(sender, source_id)
    return doc["pulled"] == pulled and doc["last_success"] is not None


async def test_pulled_statements_keep_their_ids_and_count_for_progress(
    sender: Sender, source: Peer
) -> None:
    statements = [make_statement(i) for i in range(3)]
    await source.post(statements)
    created = await _create_source(sender, source)
    await eventually(lambda: _polled(sender, created["id"], 3))
    stored = await sender.services.statements.find_by_ids("default", [s["id"] for s in statements])
    assert set(stored) == {s["id"] for s in statements}
    # Stored under the source's authority, and handed to the derivation like any other.
    authority = stored[statements[0]["id"]]["authority_key"]
    assert authority == f"account:http://localhost:8000|source:{created['id']}"

    async def derived() -> bool:
        outbox = sender.services.statements.outbox
        return not await outbox.owed("derive", "default", [s["id"] for s in statements])

    await eventually(derived, message="derivation of the pulled statements")


async def test_conflicting_statement_is_recorded_not_overwritten(
    sender: Sender, source: Peer
) -> None:
    statements = [make_statement(i, timestamp="2026-01-01T00:00:00Z") for i in range(10)]
    await source.post(statements)
    # This LRS already holds one of those ids with other content, and one identical statement.
    mine = {**statements[4], "verb": {"id": "http://adlnet.gov/expapi/verbs/passed"}}
    await sender.post([mine, statements[6]])
    created = await _create_source(sender, source)

    async def done() -> bool:
        doc = await _source(sender, created["id"])
        return doc["rejected"] == 1 and doc["last_success"] is not None

    await eventually(done)
    doc = await _source(sender, created["id"])
    assert doc["pulled"] == 8  # 10, less the conflict, less the one already here
    response = await sender.client.get(f"/admin/sources/{created['id']}/errors")
    [error] = response.json()["errors"]
    assert error["statement"] == statements[4]["id"] and error["error"].startswith("409")
    kept = await sender.services.statements.get("default", statements[4]["id"], voided=False)
    assert kept is not None and kept["verb"]["id"].endswith("/passed")
    assert await _ids(sender) == {s["id"] for s in statements}


async def test_checkpoint_moves_only_after_a_page_is_stored(
    sender: Sender, source: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = [make_statement(i) for i in range(20)]
    for start in range(0, 20, 5):
        await source.post(statements[start : start + 5])
    puller: Puller = sender.services.federation.puller
    real_store = puller.store_batch
    calls = 0

    async def failing_on_the_third_page(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("the database went away")
        return await real_store(*args, **kwargs)

    monkeypatch.setattr(puller, "store_batch", failing_on_the_third_page)
    created = await _create_source(sender, source)

    async def failed() -> bool:
        return (await _source(sender, created["id"]))["last_error"] is not None

    await eventually(failed)
    doc = await _source(sender, created["id"])
    assert "the database went away" in doc["last_error"]["message"]
    assert doc["pages"] == 2 and doc["pulled"] == 14
    page_two_end = max(
        s["stored"]
        for s in (await _statements(source))[:14]  # the source's order: stored, then id
    )
    assert doc["checkpoint"] == page_two_end

    monkeypatch.setattr(puller, "store_batch", real_store)
    await _poll_now(sender, created["id"])
    await eventually(lambda: _polled(sender, created["id"], 20))
    assert await _ids(sender) == {s["id"] for s in statements}


async def _statements(source: Peer) -> list[dict[str, Any]]:
    from lrs.storage.statements import StatementQuery

    page = source.lrs.run(
        source.lrs.services.statements.query("default", StatementQuery(ascending=True, limit=1000))
    )
    return page.statements


async def test_source_down_is_an_error_then_recovers(sender: Sender, source: Peer) -> None:
    statements = [make_statement(i) for i in range(3)]
    await source.post(statements)
    source.lrs.stop()
    created = await _create_source(sender, source)

    async def failed() -> bool:
        return (await _source(sender, created["id"]))["last_error"] is not None

    await eventually(failed)
    assert "ConnectError" in (await _source(sender, created["id"]))["last_error"]["message"]
    source.lrs.start()
    await _poll_now(sender, created["id"])
    await eventually(lambda: _polled(sender, created["id"], 3))


async def test_filter_parameters_are_passed_through(sender: Sender, source: Peer) -> None:
    passed = "http://adlnet.gov/expapi/verbs/passed"
    statements = [make_statement(i, verb=passed if i % 2 else support.VERB) for i in range(6)]
    await source.post(statements)
    created = await _create_source(sender, source, params={"verb": passed})
    await eventually(lambda: _polled(sender, created["id"], 3))
    await asyncio.sleep(0.1)
    assert await _ids(sender) == {s["id"] for s in statements if s["verb"]["id"] == passed}


async def test_poll_interval_drives_polling(sender: Sender, source: Peer) -> None:
    created = await _create_source(sender, source, poll_interval=0.2)
    statements = [make_statement(i) for i in range(2)]
    await asyncio.sleep(0.3)
    await source.post(statements)  # no "poll now": the interval brings them
    await eventually(lambda: _polled(sender, created["id"], 2))


async def test_pulled_statements_are_not_forwarded_back_to_their_source(
    sender: Sender, source: Peer
) -> None:
    """This LRS pulls from a peer and forwards to the same peer (same endpoint, same
    credential, so the same store there): what it pulled from the peer is not sent back, which
    would only echo (and turn any difference in form into a dead letter). A destination that is
    another store of that peer (another credential) still gets everything."""
    other_key, other_secret = source.lrs.credential(
        ["statements/write", "statements/read"], store="other"
    )
    same = (
        await sender.client.post(
            "/admin/destinations",
            json={"endpoint": source.endpoint, "username": source.key, "password": source.secret},
        )
    ).json()
    other = (
        await sender.client.post(
            "/admin/destinations",
            json={"endpoint": source.endpoint, "username": other_key, "password": other_secret},
        )
    ).json()
    upstream = [make_statement(i) for i in range(3)]
    await source.post(upstream)
    created = await _create_source(sender, source)
    await eventually(lambda: _polled(sender, created["id"], 3))
    mine = await sender.post([make_statement(10)])  # stored here: forwarded to both

    async def settled(destination_id: str, delivered: int) -> bool:
        response = await sender.client.get(f"/admin/destinations/{destination_id}")
        lag = response.json()["lag"]
        return lag["pending"] == 0 and lag["delivered"] == delivered

    await eventually(lambda: settled(other["id"], 4), message="the other store to get all")
    await eventually(lambda: settled(same["id"], 1), message="only ours to go back")
    await asyncio.sleep(0.2)
    response = await sender.client.get(f"/admin/destinations/{same['id']}")
    assert response.json()["lag"]["delivered"] == 1
    assert source.lrs.statement_ids("other") == {s["id"] for s in upstream} | set(mine)
    assert source.ids() == {s["id"] for s in upstream} | set(mine)


async def test_polls_that_stop_after_every_page_skip_nothing(sender: Sender, source: Peer) -> None:
    """Each poll reads one page and stops (no time left), so the next one starts from the
    checkpoint instead of the `more` link. Pages of 7 end inside batches of 10 statements that
    share one `stored`: `since` is exclusive, so resuming exactly at the checkpoint would skip
    the rest of the batch; the overlap re-reads it (no-ops)."""
    from dataclasses import replace

    puller: Puller = sender.services.federation.puller
    puller.settings = replace(puller.settings, pass_budget=0.0)
    statements = [make_statement(i) for i in range(30)]
    for start in range(0, 30, 10):
        await source.post(statements[start : start + 10])
    created = await _create_source(sender, source)
    await eventually(lambda: _has(sender, {s["id"] for s in statements}), message="all 30")
    await eventually(lambda: _polled(sender, created["id"], 30))
    doc = await _source(sender, created["id"])
    assert doc["rejected"] == 0 and doc["pages"] >= 5
    assert await _ids(sender) == {s["id"] for s in statements}


# --- second review ---------------------------------------------------------------------------


async def test_enabling_a_source_polls_it_at_once(sender: Sender, source: Peer) -> None:
    """Enabling a source makes it due now, like POST .../poll, instead of at the end of the
    interval that began with its last poll (an hour here)."""
    from lrs.federation.pulling import iso
    from lrs.storage.federation import now_micros

    created = await _create_source(sender, source)
    await eventually(lambda: _polled(sender, created["id"], 0), message="the first poll")
    path = f"/admin/sources/{created['id']}"
    assert (await sender.client.patch(path, json={"enabled": False})).status_code == 200
    statements = [make_statement(i) for i in range(2)]
    await source.post(statements)
    response = await sender.client.patch(path, json={"enabled": True})
    assert response.status_code == 200, response.text
    assert response.json()["next_poll"] <= iso(now_micros())
    await eventually(lambda: _polled(sender, created["id"], 2), message="a poll after enabling")


async def test_a_since_set_during_a_poll_wins_over_its_checkpoint(
    sender: Sender, source: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator moves the checkpoint back while a poll runs: the poll must not overwrite
    it when it advances its own; it stops, and the next poll starts from the operator's."""
    federation = sender.services.federation
    await federation.driver.close()  # the test polls itself
    statements = [make_statement(i) for i in range(20)]
    await source.post(statements)
    created = await _create_source(sender, source)
    since = "2020-01-01T00:00:00.000000Z"
    puller: Puller = federation.puller
    real_store = puller.store_batch
    patched = False

    async def moved_meanwhile(*args: Any, **kwargs: Any) -> Any:
        nonlocal patched
        result = await real_store(*args, **kwargs)
        if not patched:  # after the first page is stored, before its checkpoint is written
            patched = True
            response = await sender.client.patch(
                f"/admin/sources/{created['id']}", json={"since": since}
            )
            assert response.status_code == 200, response.text
        return result

    monkeypatch.setattr(puller, "store_batch", moved_meanwhile)
    report = await puller.pull(created["id"])
    monkeypatch.undo()
    doc = await _source(sender, created["id"])
    assert doc["checkpoint"] == since
    assert report is not None and report.more and report.pages == 1  # it stopped there
    assert doc["pulled"] == PAGE  # the page was stored, and counts

    queries: list[dict[str, list[str]]] = []
    source.lrs.chaos.on_request = lambda scope: (
        queries.append(parse_qs(scope["query_string"].decode()))
        if scope["method"] == "GET" and scope["path"].endswith("/statements")
        else None
    )
    again = await puller.pull(created["id"])  # due at once
    assert again is not None and not again.more
    assert queries[0]["since"] == [since]
    assert await _ids(sender) == {s["id"] for s in statements}
    assert (await _source(sender, created["id"]))["checkpoint"] > since
    await federation.driver.start()


async def test_a_poll_asked_for_during_a_poll_follows_it(
    sender: Sender, source: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST .../poll while a poll runs: when that poll ends the source stays due, instead of
    waiting for the next interval (an hour here)."""
    from lrs.storage.federation import now_micros

    federation = sender.services.federation
    await federation.driver.close()
    await source.post([make_statement(i) for i in range(3)])
    created = await _create_source(sender, source)
    puller: Puller = federation.puller
    real_store = puller.store_batch

    async def asked_meanwhile(*args: Any, **kwargs: Any) -> Any:
        await _poll_now(sender, created["id"])
        return await real_store(*args, **kwargs)

    monkeypatch.setattr(puller, "store_batch", asked_meanwhile)
    report = await puller.pull(created["id"])
    monkeypatch.undo()
    assert report is not None and report.stored == 3 and not report.more
    raw = await federation.sources.get("default", created["id"])
    assert raw is not None and raw["next_poll_key"] <= now_micros()
    await source.post([make_statement(10)])
    again = await puller.pull(created["id"])
    assert again is not None and again.stored == 1
    await federation.driver.start()
