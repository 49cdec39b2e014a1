"""Forwarding against a real peer: a second instance of this LRS served by uvicorn on a loopback
port, with its own store, which the tests take down or make fail (lrs.federation.loopback)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import federation_support as support
import pytest
from federation_support import Peer, Sender, eventually, make_statement

from lrs.storage.federation import now_micros
from lrs.xapi.attachments import AttachmentPart, build_multipart_mixed

# The fixtures: pytest finds them by name in the test module's namespace.
peer = support.peer
sender = support.sender

VOIDED = "http://adlnet.gov/expapi/verbs/voided"
PASSED = "http://adlnet.gov/expapi/verbs/passed"


async def _all_delivered(sender: Sender, destination_id: str) -> bool:
    lag = await sender.lag(destination_id)
    return lag["pending"] == 0


async def test_forwarding_delivers_everything_in_stored_order(sender: Sender, peer: Peer) -> None:
    before = await sender.post([make_statement(0)])  # stored before the destination existed
    destination = await sender.create_destination(peer, batch_size=25)
    batches = [[make_statement(i + 100 * b) for i in range(60)] for b in range(3)]
    sent: list[str] = []
    for batch in batches:
        sent += await sender.post(batch)
    for n in range(5):  # single statements, PUT by the client
        single = make_statement(1000 + n)
        response = await sender.client.put(
            "/xapi/statements", params={"statementId": single["id"]}, json=single
        )
        assert response.status_code == 204
        sent.append(single["id"])
    voiding = make_statement(2000, verb=VOIDED)
    voiding["object"] = {"objectType": "StatementRef", "id": sent[0]}
    sent += await sender.post([voiding])

    await eventually(lambda: peer.ids() == set(sent), message="the peer to hold every statement")
    assert before[0] not in peer.ids()
    await eventually(lambda: _all_delivered(sender, destination["id"]))
    lag = await sender.lag(destination["id"])
    assert lag["delivered"] == len(sent) and lag["dead"] == 0 and lag["retries"] == 0
    assert lag["last_success"] and lag["last_error"] is None

    # Order: the peer stored each statement no earlier than those the sender stored before it
    # (statements of one request share their `stored` and have no order among them).
    peer_stored = await _peer_stored(peer, sent)
    sender_stored = await _sender_stored(sender, sent)
    moments = sorted(set(sender_stored.values()))
    spans = [[peer_stored[i] for i in sent if sender_stored[i] == moment] for moment in moments]
    assert all(max(a) <= min(b) for a, b in zip(spans, spans[1:], strict=False))
    # The voided statement is voided on the peer too.
    voided = peer.lrs.run(peer.lrs.services.statements.get("default", sent[0], voided=True))
    assert voided is not None


async def _peer_stored(peer: Peer, ids: list[str]) -> dict[str, int]:
    docs = peer.lrs.run(peer.lrs.services.statements.find_by_ids("default", ids))
    return {i: doc["stored_key"] for i, doc in docs.items()}


async def _sender_stored(sender: Sender, ids: list[str]) -> dict[str, int]:
    docs = await sender.services.statements.find_by_ids("default", ids)
    return {i: doc["stored_key"] for i, doc in docs.items()}


async def test_peer_down_then_back_retries_until_delivered(sender: Sender, peer: Peer) -> None:
    destination = await sender.create_destination(peer, batch_size=10)
    peer.lrs.stop()
    sent = await sender.post([make_statement(i) for i in range(30)])

    async def failing_repeatedly() -> bool:
        lag = await sender.lag(destination["id"])
        return lag["retries"] >= 20 and lag["last_error"] is not None  # two attempts of 10

    await eventually(failing_repeatedly, message="retries against the stopped peer")
    lag = await sender.lag(destination["id"])
    assert lag["pending"] == 30 and lag["dead"] == 0
    assert "ConnectError" in lag["last_error"]["message"]

    peer.lrs.start()
    await eventually(lambda: peer.ids() == set(sent), message="delivery after the peer returned")
    await eventually(lambda: _all_delivered(sender, destination["id"]))
    assert (await sender.lag(destination["id"]))["dead"] == 0


async def test_peer_failing_forever_fills_dead_letters_and_replay_delivers(
    sender: Sender, peer: Peer
) -> None:
    peer.lrs.chaos.fail_status = 500
    destination = await sender.create_destination(peer, batch_size=5)
    sent = await sender.post([make_statement(i) for i in range(12)])

    async def all_dead() -> bool:
        lag = await sender.lag(destination["id"])
        return lag["dead"] == 12 and lag["pending"] == 0

    await eventually(all_dead, message="every statement in the dead-letter list")
    letters = await sender.dead_letters(destination["id"])
    assert sorted(letter["statement"] for letter in letters) == sorted(sent)
    assert all(letter["attempts"] == 4 and letter["error"]["status"] == 500 for letter in letters)
    stored = [letter["stored"] for letter in letters]
    assert stored == sorted(stored)
    assert not peer.ids()

    peer.lrs.chaos.fail_status = None  # the peer recovers
    one = letters[3]["statement"]
    response = await sender.client.post(
        f"/admin/destinations/{destination['id']}/dead-letters/{one}/replay"
    )
    assert response.json() == {"replayed": 1}
    await eventually(lambda: peer.ids() == {one}, message="the replayed statement")
    response = await sender.client.post(
        f"/admin/destinations/{destination['id']}/dead-letters/{one}/replay"
    )
    assert response.status_code == 404

    response = await sender.client.post(
        f"/admin/destinations/{destination['id']}/dead-letters/replay"
    )
    assert response.json() == {"replayed": 11}
    await eventually(lambda: peer.ids() == set(sent), message="every replayed statement")
    await eventually(lambda: _all_delivered(sender, destination["id"]))
    lag = await sender.lag(destination["id"])
    # None is dead any more, but the lag still says how many ever were.
    assert lag["dead"] == 0 and lag["dead_letters_total"] == 12


async def test_client_errors_are_dead_letters_at_once(sender: Sender, peer: Peer) -> None:
    """A 4xx other than 409/429 is not retried: the peer's answer is kept for the operator."""
    key, secret = peer.lrs.credential(["statements/read"])  # may not write: 403
    destination = await sender.create_destination(peer, username=key, password=secret)
    sent = await sender.post([make_statement(i) for i in range(3)])

    async def dead() -> bool:
        return (await sender.lag(destination["id"]))["dead"] == 3

    await eventually(dead)
    letters = await sender.dead_letters(destination["id"])
    assert {letter["statement"] for letter in letters} == set(sent)
    assert all(letter["error"]["status"] == 403 for letter in letters)
    assert all("scope" in letter["error"]["message"] for letter in letters)
    lag = await sender.lag(destination["id"])
    assert lag["retries"] == 0 and lag["pending"] == 0


async def test_one_refused_statement_does_not_hold_back_the_batch(
    sender: Sender, peer: Peer
) -> None:
    """The peer refuses the batch because of one statement (a 2.0 statement sent to a peer
    pinned to 1.0.3): the others are sent one by one and arrive; only that one is dead."""
    posts: list[int] = []
    peer.lrs.chaos.on_request = lambda scope: posts.append(1) if scope["method"] == "POST" else 0
    destination = await sender.create_destination(peer, version="1.0.3")
    driver = sender.services.federation.driver
    await driver.close()  # so that the three requests are fanned out as one group
    ids = []
    for n, version in enumerate(["1.0.3", "2.0.0", "1.0.3"]):
        response = await sender.client.post(
            "/xapi/statements",
            json=[make_statement(n)],
            headers={"X-Experience-API-Version": version},
        )
        assert response.status_code == 200
        ids += response.json()
    await driver.start()

    async def settled() -> bool:
        lag = await sender.lag(destination["id"])
        return lag["pending"] == 0 and lag["dead"] == 1

    await eventually(settled)
    assert peer.ids() == {ids[0], ids[2]}
    assert len(posts) == 1  # the refused batch; then one PUT each
    [letter] = await sender.dead_letters(destination["id"])
    assert letter["statement"] == ids[1] and letter["error"]["status"] == 400
    assert "version" in letter["error"]["message"]


async def test_retry_after_is_honoured(sender: Sender, peer: Peer) -> None:
    arrivals: list[float] = []
    peer.lrs.chaos.on_request = lambda scope: arrivals.append(time.monotonic())
    peer.lrs.chaos.fail_status = 429
    peer.lrs.chaos.retry_after = "1"
    destination = await sender.create_destination(peer)
    sent = await sender.post([make_statement(0), make_statement(1)])
    await eventually(lambda: len(arrivals) >= 1, message="a first attempt (GET about: 429)")
    await asyncio.sleep(0.3)
    peer.lrs.chaos.fail_status = None
    await eventually(lambda: peer.ids() == set(sent), message="delivery after Retry-After")
    assert arrivals[1] - arrivals[0] >= 0.95  # the back-off alone would be ~50 ms
    lag = await sender.lag(destination["id"])
    assert lag["retries"] == 2 and lag["dead"] == 0


async def test_conflicts_same_statement_delivered_different_one_dead(
    sender: Sender, peer: Peer
) -> None:
    # With a timestamp: one the LRS assigns is part of the statement for the next LRS.
    same = make_statement(1, timestamp="2026-01-02T03:04:05.678Z")
    different = make_statement(2)
    await peer.post([same, {**different, "verb": {"id": PASSED}}])
    destination = await sender.create_destination(peer)
    await sender.post([same, different, make_statement(3)])

    async def settled() -> bool:
        lag = await sender.lag(destination["id"])
        return lag["pending"] == 0 and lag["delivered"] + lag["dead"] == 3

    await eventually(settled)
    [letter] = await sender.dead_letters(destination["id"])
    assert letter["statement"] == different["id"]
    assert letter["error"]["status"] == 409 and "different" in letter["error"]["message"]
    lag = await sender.lag(destination["id"])
    assert lag["delivered"] == 2 and lag["dead"] == 1


async def test_filter_and_voiding(sender: Sender, peer: Peer) -> None:
    wanted = await sender.create_destination(
        peer,
        filter={"verbs": [PASSED], "activity_prefixes": ["http://example.com/course/"]},
        forward_voiding=True,
    )
    passed_in_course = make_statement(1, verb=PASSED, activity="http://example.com/course/m1")
    passed_elsewhere = make_statement(2, verb=PASSED, activity="http://example.com/other/x")
    experienced = make_statement(3, activity="http://example.com/course/m1")
    await sender.post([passed_in_course, passed_elsewhere, experienced])
    voids_wanted = make_statement(4, verb=VOIDED)
    voids_wanted["object"] = {"objectType": "StatementRef", "id": passed_in_course["id"]}
    voids_other = make_statement(5, verb=VOIDED)
    voids_other["object"] = {"objectType": "StatementRef", "id": experienced["id"]}
    await sender.post([voids_wanted, voids_other])

    expected = {passed_in_course["id"], voids_wanted["id"]}
    await eventually(lambda: peer.ids() == expected)
    await eventually(lambda: _all_delivered(sender, wanted["id"]))
    assert peer.ids() == expected


async def test_no_voiding_when_not_wanted(sender: Sender, peer: Peer) -> None:
    destination = await sender.create_destination(peer, forward_voiding=False)
    first = make_statement(1)
    voids = make_statement(2, verb=VOIDED)
    voids["object"] = {"objectType": "StatementRef", "id": first["id"]}
    await sender.post([first])
    await sender.post([voids])
    await eventually(lambda: _all_delivered(sender, destination["id"]))
    await asyncio.sleep(0.2)
    assert peer.ids() == {first["id"]}


async def test_attachments_are_forwarded_with_their_data(sender: Sender, peer: Peer) -> None:
    import hashlib

    await sender.create_destination(peer)
    data = b"certificate of completion\n" * 20
    sha2 = hashlib.sha256(data).hexdigest()
    statement = make_statement(1)
    statement["attachments"] = [
        {
            "usageType": "http://example.com/attachment-usage/certificate",
            "display": {"en-US": "certificate"},
            "contentType": "text/plain",
            "length": len(data),
            "sha2": sha2,
        }
    ]
    body, content_type = build_multipart_mixed(
        json.dumps(statement).encode(), [AttachmentPart(sha2, "text/plain", data)]
    )
    response = await sender.client.post(
        "/xapi/statements", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    await eventually(lambda: peer.ids() == {statement["id"]})
    stored = peer.lrs.run(peer.lrs.services.statements.get_attachments("default", [sha2]))
    assert [bytes(doc["data"]) for doc in stored] == [data]


async def test_statements_left_unfanned_are_swept(sender: Sender, peer: Peer) -> None:
    """The API stored statements but never handed them over (Redis down, process killed):
    the outbox entry makes the sweep forward them."""
    destination = await sender.create_destination(peer)
    driver = sender.services.federation.driver
    await driver.close()  # nothing runs: after_store hands nothing over
    sent = await sender.post([make_statement(i) for i in range(5)])
    owed = await sender.services.statements.outbox.owed("forward", "default", sent)
    assert owed == set(sent)
    await driver.start()
    await eventually(lambda: peer.ids() == set(sent), message="the sweep to forward them")
    await eventually(lambda: _all_delivered(sender, destination["id"]))


async def test_a_dead_senders_lease_expires(sender: Sender, peer: Peer) -> None:
    """A worker died while it held the destination: nobody sends until its lease runs out,
    then the groups it left are sent."""
    destination = await sender.create_destination(peer)
    collection = sender.services.federation.destinations.collection
    await collection.update_one(
        {"_id": destination["id"]},
        {"$set": {"lease_until": now_micros() + 1_000_000, "lease_owner": "dead-worker"}},
    )
    started = time.monotonic()
    sent = await sender.post([make_statement(i) for i in range(4)])
    await eventually(lambda: peer.ids() == set(sent))
    assert time.monotonic() - started >= 0.8


async def test_concurrent_senders_do_not_send_a_batch_twice(sender: Sender, peer: Peer) -> None:
    posts: list[Any] = []
    peer.lrs.chaos.on_request = lambda scope: posts.append(1) if scope["method"] == "POST" else 0
    destination = await sender.create_destination(peer, batch_size=10)
    driver = sender.services.federation.driver
    await driver.close()  # the test drives delivery itself
    sent = await sender.post([make_statement(i) for i in range(40)])
    forwarder = sender.services.federation.forwarder
    await forwarder.fan_out("default", sent)
    await asyncio.gather(*(forwarder.deliver(destination["id"]) for _ in range(4)))
    await eventually(lambda: peer.ids() == set(sent))
    assert len(posts) == 4  # 40 statements in batches of 10, each sent once
    await driver.start()


async def test_disabled_destination_queues_and_catches_up(sender: Sender, peer: Peer) -> None:
    destination = await sender.create_destination(peer)
    response = await sender.client.post(f"/admin/destinations/{destination['id']}/disable")
    assert response.status_code == 200 and response.json()["enabled"] is False
    sent = await sender.post([make_statement(i) for i in range(3)])
    await eventually(lambda: _pending(sender, destination["id"], 3))
    await asyncio.sleep(0.3)
    assert not peer.ids()
    response = await sender.client.post(f"/admin/destinations/{destination['id']}/enable")
    assert response.json()["enabled"] is True
    await eventually(lambda: peer.ids() == set(sent))


async def _pending(sender: Sender, destination_id: str, count: int) -> bool:
    return (await sender.lag(destination_id))["pending"] == count


@pytest.mark.parametrize("statement_version", ["1.0.0", "2.0.0"])
async def test_each_statement_goes_with_its_own_version(
    sender: Sender, peer: Peer, statement_version: str
) -> None:
    versions: list[str] = []
    peer.lrs.chaos.on_request = lambda scope: versions.extend(
        v.decode() for k, v in scope["headers"] if k == b"x-experience-api-version"
    )
    await sender.create_destination(peer)
    statement = {**make_statement(1), "version": statement_version}
    header = "2.0.0" if statement_version == "2.0.0" else "1.0.3"
    response = await sender.client.post(
        "/xapi/statements", json=[statement], headers={"X-Experience-API-Version": header}
    )
    assert response.status_code == 200, response.text
    await eventually(lambda: peer.ids() == {statement["id"]})
    assert versions[-1] == header  # /about first, then the statement in its own version


async def test_undecryptable_password_is_reported_not_crashed(sender: Sender, peer: Peer) -> None:
    """LRS_SECRET_KEY changed without keeping the old key: the destination says why it is
    stuck, and nothing is lost."""
    from lrs.federation.secrets import SecretBox

    destination = await sender.create_destination(peer)
    await sender.services.federation.destinations.collection.update_one(
        {"_id": destination["id"]},
        {"$set": {"password": SecretBox(["some other key"]).encrypt(peer.secret)}},
    )
    await sender.post([make_statement(1)])

    async def reported() -> bool:
        lag = await sender.lag(destination["id"])
        error = lag["last_error"] or {}
        return lag["pending"] == 1 and "LRS_SECRET_KEY" in (error.get("message") or "")

    await eventually(reported)
    assert not peer.ids()


# --- review fixes ---------------------------------------------------------------------------


def _slow_retries(sender: Sender, **changes: Any) -> None:
    from dataclasses import replace

    forwarder = sender.services.federation.forwarder
    forwarder.settings = replace(forwarder.settings, **changes)


async def test_enabling_a_held_destination_retries_the_held_statements_first(
    sender: Sender, peer: Peer
) -> None:
    """After a failure the destination holds back (here 15 to 30 s). Enabling it, or replaying,
    means "try now": the statements that failed go out at once, and before the newer ones."""
    _slow_retries(sender, backoff_base=30.0, backoff_max=30.0)
    destination = await sender.create_destination(peer)
    peer.lrs.stop()
    [first] = await sender.post([make_statement(1)])

    async def held() -> bool:
        lag = await sender.lag(destination["id"])
        return lag["retries"] >= 1 and lag["next_attempt"] is not None

    await eventually(held, message="a failed attempt")
    peer.lrs.start()
    [second] = await sender.post([make_statement(2)])  # queued behind the held one
    await asyncio.sleep(0.3)
    assert not peer.ids()  # held back, keeping the order
    response = await sender.client.post(f"/admin/destinations/{destination['id']}/enable")
    assert response.status_code == 200
    await eventually(lambda: peer.ids() == {first, second}, timeout=5, message="both, now")
    stored = await _peer_stored(peer, [first, second])
    assert stored[first] <= stored[second]


async def test_a_long_batch_keeps_its_lease(sender: Sender, peer: Peer) -> None:
    """A batch the peer refuses goes out one PUT at a time, which may take longer than the
    lease: the sender renews it on the way, so no second sender takes the destination over
    and sends the same statements at the same time."""
    from urllib.parse import parse_qs

    puts: list[str] = []

    def slow_puts(scope: Any) -> None:
        if scope["method"] == "PUT":
            puts.append(parse_qs(scope["query_string"].decode())["statementId"][0])
            time.sleep(0.3)

    peer.lrs.chaos.on_request = slow_puts
    _slow_retries(sender, lease=1.0)  # 7 PUTs of 0.3 s outlast it
    destination = await sender.create_destination(peer, version="1.0.3")
    driver = sender.services.federation.driver
    await driver.close()
    ids: list[str] = []
    for n, version in enumerate(["1.0.3"] * 3 + ["2.0.0"] + ["1.0.3"] * 3):
        response = await sender.client.post(
            "/xapi/statements",
            json=[make_statement(n)],
            headers={"X-Experience-API-Version": version},
        )
        assert response.status_code == 200
        ids += response.json()
    forwarder = sender.services.federation.forwarder
    await forwarder.fan_out("default", ids)  # one group: one POST, refused, then 7 PUTs

    first = asyncio.create_task(forwarder.deliver(destination["id"]))
    await asyncio.sleep(1.6)  # past the lease the first sender took
    second = await forwarder.deliver(destination["id"])
    await first
    assert second is False  # the destination was still the first sender's
    assert sorted(puts) == sorted(ids)  # each statement PUT once
    assert peer.ids() == set(ids) - {ids[3]}
    lag = await sender.lag(destination["id"])
    assert lag["pending"] == 0 and lag["dead"] == 1
    await driver.start()


async def test_a_statement_in_two_groups_is_sent_once_per_batch(sender: Sender, peer: Peer) -> None:
    """A fan-out repeated with another grouping (the sweep after a crash) puts a statement in
    two groups; the batch must not carry its id twice, which a peer refuses as a whole."""
    requests: list[str] = []
    peer.lrs.chaos.on_request = lambda scope: requests.append(scope["method"])
    destination = await sender.create_destination(peer)
    driver = sender.services.federation.driver
    await driver.close()
    ids = await sender.post([make_statement(n) for n in range(4)])
    forwarder = sender.services.federation.forwarder
    await forwarder.fan_out("default", ids[:3])
    await forwarder.fan_out("default", ids[1:])
    await forwarder.deliver(destination["id"])
    assert peer.ids() == set(ids)
    assert requests.count("POST") == 1 and "PUT" not in requests
    lag = await sender.lag(destination["id"])
    assert lag["pending"] == 0 and lag["dead"] == 0
    await driver.start()


async def test_work_of_a_destination_deleted_meanwhile_is_not_left_behind(
    sender: Sender, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting a destination drops its queue and dead letters; a fan-out or a delivery that
    was under way at that moment must not leave rows nobody will ever look at."""
    federation = sender.services.federation
    destination = await sender.create_destination(peer)
    driver = federation.driver
    await driver.close()
    raw = await federation.destinations.get("default", destination["id"])
    ids = await sender.post([make_statement(n) for n in range(3)])
    # 1. A fan-out that read the destinations just before the delete.
    response = await sender.client.delete(f"/admin/destinations/{destination['id']}")
    assert response.status_code == 204

    real_of_store = federation.destinations.of_store
    reads = 0

    async def stale(store: str) -> list[dict[str, Any]]:
        nonlocal reads
        reads += 1
        return [raw] if reads == 1 else await real_of_store(store)  # read before the delete

    monkeypatch.setattr(federation.destinations, "of_store", stale)
    await federation.forwarder.fan_out("default", ids)
    assert not await federation.deliveries.pending(destination["id"])
    monkeypatch.undo()

    # 2. A delivery under way when the destination is deleted; the peer refuses (dead letters).
    key, secret = peer.lrs.credential(["statements/read"])  # may not write: 403
    second = await sender.create_destination(peer, username=key, password=secret)
    more = await sender.post([make_statement(n) for n in range(3)])
    await federation.forwarder.fan_out("default", more)
    real_find = federation.statements.find_by_ids

    async def deleted_meanwhile(store: str, wanted: Any) -> Any:
        await sender.client.delete(f"/admin/destinations/{second['id']}")
        return await real_find(store, wanted)

    monkeypatch.setattr(federation.statements, "find_by_ids", deleted_meanwhile)
    await federation.forwarder.deliver(second["id"])
    monkeypatch.undo()
    assert peer.lrs.chaos.requests["PUT"] == 3  # refused one by one: three dead letters
    assert await federation.deliveries.count_dead(second["id"]) == 0
    assert not await federation.deliveries.pending(second["id"])
    await driver.start()


async def test_replay_never_drops_a_letter_whose_group_id_is_taken(sender: Sender) -> None:
    """A crash between burying the dead letters of a replayed group and removing that group
    leaves both; replaying the same letters again must still queue every one of them."""
    from lrs.storage.federation import group_id

    federation = sender.services.federation
    response = await sender.client.post(
        "/admin/destinations", json={"endpoint": "http://127.0.0.1:9/xapi/", "enabled": False}
    )
    destination = await federation.destinations.get("default", response.json()["id"])
    assert destination is not None
    x, y = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"
    letters = [
        {
            "_id": f"{destination['_id']}:{i}",
            "store": "default",
            "destination": destination["_id"],
            "statement": i,
            "stored_key": n,
            "attempts": 4,
            "error": {"message": "HTTP 500", "status": 500, "at_key": now_micros()},
            "dead_key": now_micros(),
        }
        for n, i in enumerate([x, y])
    ]
    await federation.deliveries.bury(letters)
    # What an earlier replay of [x, y] left: its group, still holding y.
    await federation.deliveries.add(
        [
            {
                "_id": group_id(destination["_id"], [x, y], tag="replay:"),
                "store": "default",
                "destination": destination["_id"],
                "statements": [y],
                "count": 1,
                "stored_key": 1,
                "seq": 0,
                "attempts": 3,
                "next_attempt_key": 0,
                "created_key": now_micros(),
                "last_error": None,
            }
        ]
    )
    assert await federation.forwarder.replay(destination) == 2
    rows = await federation.deliveries.deliveries.find({"destination": destination["_id"]})
    assert x in {i for row in rows for i in row["statements"]}


async def test_a_stored_configuration_that_cannot_be_sent_is_reported(
    sender: Sender, peer: Peer
) -> None:
    """A header value no HTTP client can send (stored before the API refused it): the
    destination says why it is stuck instead of failing silently on every round."""
    import json as _json

    federation = sender.services.federation
    destination = await sender.create_destination(peer)
    box = await federation.keys.box()
    await federation.destinations.collection.update_one(
        {"_id": destination["id"]},
        {"$set": {"headers": box.encrypt(_json.dumps({"X-Tenant": "caf\u00e9"}))}},
    )
    await sender.post([make_statement(1)])

    async def reported() -> bool:
        lag = await sender.lag(destination["id"])
        error = lag["last_error"] or {}
        return lag["pending"] == 1 and "configuration" in (error.get("message") or "")

    await eventually(reported, timeout=5)
    assert not peer.ids()


async def test_celery_sweep_fans_out_itself_and_enqueues_no_fan_out_tasks(
    sender: Sender, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep runs every few seconds (API process and beat). Were it to enqueue a fan-out
    task for the statements still marked, a broker without workers would pile up the same
    thousand ids on every round; it fans them out itself (database work, no network) and
    enqueues deliveries only."""
    from lrs.federation import dispatch

    federation = sender.services.federation
    destination = await sender.create_destination(peer)
    await federation.driver.close()
    ids = await sender.post([make_statement(n) for n in range(5)])
    enqueued: list[tuple[str, tuple[Any, ...]]] = []

    class Recorder:
        def send(self, name: str, args: list[Any]) -> bool:
            enqueued.append((name, tuple(args)))
            return True

        def close(self, timeout: float = 5.0) -> None:
            pass

    sweeper = dispatch.CeleryFederation(
        federation,
        interval=1.0,
        grace=0.0,
        publisher=Recorder(),  # type: ignore[arg-type]
    )
    for _ in range(3):
        await sweeper.sweep()
    assert not await sender.services.statements.outbox.pending("forward", limit=1)
    assert [name for name, _ in enqueued] == ["lrs.federation.deliver"] * 3
    assert {args for _, args in enqueued} == {(destination["id"],)}
    await federation.forwarder.deliver(destination["id"])
    assert peer.ids() == set(ids)
    await federation.driver.start()


async def test_extra_headers_are_sent_and_secrets_never_shown_or_logged(
    sender: Sender, peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    seen: list[dict[str, str]] = []
    peer.lrs.chaos.on_request = lambda scope: seen.append(
        {k.decode(): v.decode() for k, v in scope["headers"]}
    )
    token = "tenant-token-0123456789"
    destination = await sender.create_destination(peer, headers={"X-Tenant": token})
    peer.lrs.stop()  # failures first: they are logged and recorded
    sent = await sender.post([make_statement(1)])

    async def failed() -> bool:
        return (await sender.lag(destination["id"]))["retries"] >= 1

    await eventually(failed)
    peer.lrs.start()
    await eventually(lambda: peer.ids() == set(sent))
    assert seen and all(headers.get("x-tenant") == token for headers in seen)
    shown = (await sender.client.get(f"/admin/destinations/{destination['id']}")).text
    listed = (await sender.client.get("/admin/destinations")).text
    for secret in (peer.secret, token):
        assert secret not in shown and secret not in listed
        assert secret not in caplog.text


async def test_a_destination_never_gets_another_stores_statements(
    sender: Sender, peer: Peer
) -> None:
    destination = await sender.create_destination(peer)
    key, secret = await _credential(sender, "other")
    theirs = [make_statement(n) for n in range(3)]
    response = await sender.client.post(
        "/xapi/statements", json=theirs, headers={"Authorization": key_auth(key, secret)}
    )
    assert response.status_code == 200, response.text
    mine = await sender.post([make_statement(10)])
    await eventually(lambda: _all_delivered(sender, destination["id"]))
    await asyncio.sleep(0.3)  # the other store's fan-out has had every chance
    assert peer.ids() == set(mine)
    assert (await sender.lag(destination["id"]))["delivered"] == 1


async def _credential(sender: Sender, store: str) -> tuple[str, str]:
    created, secret = await sender.services.credentials.create(store, ["all"], "other store")
    return created.key, secret


def key_auth(key: str, secret: str) -> str:
    from lrs.federation.loopback import basic_auth

    return basic_auth(key, secret)


# --- second review ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_credentials_refused_on_the_about_probe_are_dead_letters_at_once(
    sender: Sender, status: int
) -> None:
    """The peer refuses the credentials already on /about: as for the same answer to a PUT,
    the statements go straight to the dead letters with the peer's answer, without retries."""
    import httpx

    federation = sender.services.federation
    await federation.driver.close()  # the test drives delivery itself
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/about"):
            return httpx.Response(status, json={"error": "these credentials are not welcome"})
        return httpx.Response(500)  # never reached: nothing is sent after the refusal

    federation.forwarder.transport = httpx.MockTransport(handler)
    response = await sender.client.post(
        "/admin/destinations",
        json={"endpoint": f"http://refusing-{status}.test/xapi/", "username": "k", "password": "p"},
    )
    destination_id = response.json()["id"]
    sent = await sender.post([make_statement(n) for n in range(3)])
    await federation.forwarder.fan_out("default", sent)
    await federation.forwarder.deliver(destination_id)

    assert seen == ["GET /xapi/about"]
    letters = await sender.dead_letters(destination_id)
    assert sorted(letter["statement"] for letter in letters) == sorted(sent)
    for letter in letters:
        assert letter["error"]["status"] == status and letter["attempts"] == 1
        assert "not welcome" in letter["error"]["message"]
    lag = await sender.lag(destination_id)
    assert (lag["pending"], lag["dead"], lag["retries"]) == (0, 3, 0)
    assert lag["dead_letters_total"] == 3 and lag["next_attempt"] is None
    assert lag["last_error"]["status"] == status
    assert "not welcome" in lag["last_error"]["message"]
    await federation.driver.start()


async def _racing_creation(sender: Sender, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the next destination creation race with a write: a statement is stored after the
    destination's creation time was taken, and fanned out before the destination is saved.
    Returns a list that holds the id of that statement once the creation ran."""
    federation = sender.services.federation
    real_create = federation.destinations.create
    racing: list[str] = []

    async def create_late(doc: dict[str, Any]) -> None:
        racing.extend(await sender.post([make_statement(1)]))
        await federation.forwarder.fan_out("default", racing)  # finds no destination yet
        await real_create(doc)

    monkeypatch.setattr(federation.destinations, "create", create_late)
    return racing


async def test_a_statement_stored_while_a_destination_is_saved_is_forwarded(
    sender: Sender, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    federation = sender.services.federation
    await federation.driver.close()
    racing = await _racing_creation(sender, monkeypatch)
    destination = await sender.create_destination(peer)
    monkeypatch.undo()
    [statement_id] = racing
    stored = await _sender_stored(sender, racing)
    created = await federation.destinations.get("default", destination["id"])
    assert created is not None and stored[statement_id] >= created["created_key"]
    assert (await sender.lag(destination["id"]))["pending"] == 1  # queued by the creation
    assert created["caught_up"] is True

    await federation.driver.start()
    await eventually(lambda: peer.ids() == {statement_id}, message="the racing statement")


async def test_a_creation_that_died_before_catching_up_is_finished_by_the_sweep(
    sender: Sender, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    federation = sender.services.federation
    await federation.driver.close()
    racing = await _racing_creation(sender, monkeypatch)

    async def died(destination: dict[str, Any]) -> bool:  # the process died after the save
        return False

    monkeypatch.setattr(federation.forwarder, "catch_up", died)
    destination = await sender.create_destination(peer)
    monkeypatch.undo()
    assert (await sender.lag(destination["id"]))["pending"] == 0

    await federation.driver.start()  # its sweep catches up (after the grace)
    await eventually(lambda: peer.ids() == set(racing), message="the sweep to catch up")
    created = await federation.destinations.get("default", destination["id"])
    assert created is not None and created["caught_up"] is True


async def test_a_batch_stored_while_its_store_has_no_destination_owes_no_forwarding(
    sender: Sender, peer: Peer
) -> None:
    """Embedded store: a batch committed while the store has no destination leaves no
    `forward` entry (no fan-out to run, nothing to delete); one committed once a destination
    exists does, and is delivered. Elsewhere (memory, MongoDB) every batch leaves one."""
    federation = sender.services.federation
    outbox = sender.services.statements.outbox
    await federation.driver.close()  # entries stay where the batches left them
    early = await sender.post([make_statement(0), make_statement(1)])
    owed_early = await outbox.owed("forward", "default", early)
    atomic = sender.services.database.context.atomic
    assert owed_early == (set() if atomic else set(early))

    destination = await sender.create_destination(peer)
    late = await sender.post([make_statement(2)])
    assert await outbox.owed("forward", "default", late) == set(late)
    await federation.driver.start()
    await eventually(lambda: _all_delivered(sender, destination["id"]))
    await eventually(lambda: peer.ids() == set(late), message="the batch stored after creation")
    assert await outbox.owed("forward", "default", [*early, *late]) == set()
