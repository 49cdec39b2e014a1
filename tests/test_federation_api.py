"""The federation admin API: destinations, dead letters, sources (on every storage back end)."""

from __future__ import annotations

import json

import pytest
from conftest import LRS

from lrs.federation.secrets import SecretBox, SecretError
from lrs.storage.federation import now_micros

# Nothing listens on the discard port of loopback: connections are refused at once.
NOWHERE = "http://127.0.0.1:9/xapi/"
PASSWORD = "s3cret-peer-password"


async def _admin(lrs: LRS, store: str | None = None) -> dict[str, str]:
    return lrs.headers(await lrs.credential(["admin"], store=store))


async def test_destination_lifecycle_never_shows_secrets(lrs: LRS) -> None:
    headers = await _admin(lrs)
    body = {
        "name": "backup",
        "endpoint": "http://127.0.0.1:9/xapi",
        "username": "key",
        "password": PASSWORD,
        "version": "1.0.3",
        "headers": {"X-Tenant": "tenant-token"},
        "filter": {"verbs": ["http://adlnet.gov/expapi/verbs/passed"]},
        "forward_voiding": False,
        "batch_size": 50,
        "enabled": False,
    }
    response = await lrs.client.post("/admin/destinations", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["endpoint"] == NOWHERE  # normalised with its trailing slash
    assert created["password_set"] is True and "password" not in created
    assert created["headers"] == {"X-Tenant": "(hidden)"}
    assert created["filter"]["verbs"] == ["http://adlnet.gov/expapi/verbs/passed"]
    assert (created["enabled"], created["forward_voiding"], created["batch_size"]) == (
        False,
        False,
        50,
    )
    assert created["lag"] == {
        "pending": 0,
        "oldest_pending_stored": None,
        "dead": 0,
        "dead_letters_total": 0,
        "delivered": 0,
        "retries": 0,
        "last_success": None,
        "last_error": None,
        "next_attempt": None,
    }
    destination_id = created["id"]

    # At rest the password and header values are encrypted.
    raw = await lrs.services.federation.destinations.get("default", destination_id)
    assert raw is not None
    assert PASSWORD not in json.dumps(raw, default=str)
    assert "tenant-token" not in json.dumps(raw, default=str)
    box = await lrs.services.federation.keys.box()
    assert box.decrypt(raw["password"]) == PASSWORD

    listed = (await lrs.client.get("/admin/destinations", headers=headers)).json()
    assert [d["id"] for d in listed["destinations"]] == [destination_id]
    assert PASSWORD not in json.dumps(listed)

    patched = await lrs.client.patch(
        f"/admin/destinations/{destination_id}",
        json={"name": "renamed", "password": "new-password", "filter": {}},
        headers=headers,
    )
    assert patched.status_code == 200, patched.text
    doc = patched.json()
    assert doc["name"] == "renamed" and doc["filter"]["verbs"] == []
    assert doc["username"] == "key" and doc["version"] == "1.0.3"  # untouched
    raw = await lrs.services.federation.destinations.get("default", destination_id)
    assert raw is not None and box.decrypt(raw["password"]) == "new-password"

    enabled = await lrs.client.post(f"/admin/destinations/{destination_id}/enable", headers=headers)
    assert enabled.json()["enabled"] is True
    disabled = await lrs.client.post(
        f"/admin/destinations/{destination_id}/disable", headers=headers
    )
    assert disabled.json()["enabled"] is False

    # Deleting removes the destination's queue too.
    await lrs.client.post("/xapi/statements", json=[_statement()])
    await _until_fanned_out(lrs)
    assert await lrs.services.federation.deliveries.pending(destination_id)
    deleted = await lrs.client.delete(f"/admin/destinations/{destination_id}", headers=headers)
    assert deleted.status_code == 204
    assert not await lrs.services.federation.deliveries.pending(destination_id)
    missing = await lrs.client.get(f"/admin/destinations/{destination_id}", headers=headers)
    assert missing.status_code == 404


def _statement() -> dict:
    return {
        "actor": {"mbox": "mailto:a@example.com"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/passed"},
        "object": {"id": "http://example.com/a"},
    }


async def _until_fanned_out(lrs: LRS) -> None:
    import asyncio

    for _ in range(200):
        if not await lrs.services.statements.outbox.pending("forward", limit=1):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("statements were not fanned out")


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "endpoint is required"),
        ({"endpoint": "ftp://example.com/xapi/"}, "endpoint"),
        ({"endpoint": "http:///xapi/"}, "endpoint"),
        ({"endpoint": "http://example.com/xapi/?a=1"}, "query"),
        ({"endpoint": NOWHERE, "version": "0.95"}, "version"),
        ({"endpoint": NOWHERE, "headers": {"Authorization": "x"}}, "set by the LRS"),
        ({"endpoint": NOWHERE, "headers": {"X-A": "a\r\nb"}}, "line break"),
        ({"endpoint": NOWHERE, "headers": {"bad name": "a"}}, "header name"),
        # Credentials in the URL would be stored, shown and logged in clear.
        ({"endpoint": "http://key:secret@127.0.0.1:9/xapi/"}, "username and password"),
        ({"endpoint": "http://key@127.0.0.1:9/xapi/"}, "username and password"),
        # HTTP header values are ASCII: another character could never be sent.
        ({"endpoint": NOWHERE, "headers": {"X-A": "caf\u00e9"}}, "ASCII"),
        ({"endpoint": NOWHERE, "headers": {"X-A": "a\u0000b"}}, "ASCII"),
        ({"endpoint": NOWHERE, "filter": {"verbs": ["not an iri"]}}, "IRI"),
        ({"endpoint": NOWHERE, "filter": {"registration": "nope"}}, "UUID"),
        ({"endpoint": NOWHERE, "filter": {"activity_prefixes": [""]}}, "empty"),
        ({"endpoint": NOWHERE, "filter": {"colour": "red"}}, "filter.colour"),
        ({"endpoint": NOWHERE, "batch_size": 0}, "batch_size"),
        ({"endpoint": NOWHERE, "secret": "x"}, "secret"),
    ],
)
async def test_destination_validation(lrs: LRS, body: dict, message: str) -> None:
    headers = await _admin(lrs)
    response = await lrs.client.post("/admin/destinations", json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


async def test_malformed_json_is_a_400(lrs: LRS) -> None:
    headers = await _admin(lrs)
    headers["Content-Type"] = "application/json"
    response = await lrs.client.post("/admin/destinations", content=b"{nope", headers=headers)
    assert response.status_code == 400


async def test_admin_scope_and_store_isolation(lrs: LRS) -> None:
    everything_but_admin = lrs.headers(await lrs.credential(["all"]))
    response = await lrs.client.get("/admin/destinations", headers=everything_but_admin)
    assert response.status_code == 403
    response = await lrs.client.post(
        "/admin/sources", json={"endpoint": NOWHERE}, headers=everything_but_admin
    )
    assert response.status_code == 403

    mine = await _admin(lrs)
    theirs = await _admin(lrs, store="other")
    created = (
        await lrs.client.post(
            "/admin/destinations", json={"endpoint": NOWHERE, "enabled": False}, headers=mine
        )
    ).json()
    for method, path in [
        ("GET", f"/admin/destinations/{created['id']}"),
        ("PATCH", f"/admin/destinations/{created['id']}"),
        ("DELETE", f"/admin/destinations/{created['id']}"),
        ("POST", f"/admin/destinations/{created['id']}/disable"),
        ("GET", f"/admin/destinations/{created['id']}/dead-letters"),
        ("POST", f"/admin/destinations/{created['id']}/dead-letters/replay"),
    ]:
        kwargs = {"json": {}} if method == "PATCH" else {}
        response = await lrs.client.request(method, path, headers=theirs, **kwargs)
        assert response.status_code == 404, (method, path)
    listed = await lrs.client.get("/admin/destinations", headers=theirs)
    assert listed.json() == {"destinations": []}


async def test_dead_letters_page_and_replay(lrs: LRS) -> None:
    headers = await _admin(lrs)
    created = (
        await lrs.client.post(
            "/admin/destinations", json={"endpoint": NOWHERE, "enabled": False}, headers=headers
        )
    ).json()
    destination_id = created["id"]
    letters = [
        {
            "_id": f"{destination_id}:{n:08d}-0000-4000-8000-000000000000",
            "store": "default",
            "destination": destination_id,
            "statement": f"{n:08d}-0000-4000-8000-000000000000",
            "stored_key": 1_700_000_000_000_000 + n,
            "attempts": 3,
            "error": {"message": "HTTP 400: no", "status": 400, "at_key": now_micros()},
            "dead_key": now_micros(),
        }
        for n in range(5)
    ]
    await lrs.services.federation.deliveries.bury(letters)
    path = f"/admin/destinations/{destination_id}/dead-letters"
    first = (await lrs.client.get(path, params={"limit": 2}, headers=headers)).json()
    assert [d["statement"][:8] for d in first["dead_letters"]] == ["00000000", "00000001"]
    assert first["dead_letters"][0]["error"]["status"] == 400
    second = (await lrs.client.get(first["more"], headers=headers)).json()
    assert [d["statement"][:8] for d in second["dead_letters"]] == ["00000002", "00000003"]
    third = (await lrs.client.get(second["more"], headers=headers)).json()
    assert len(third["dead_letters"]) == 1 and third["more"] == ""
    bad = await lrs.client.get(path, params={"cursor": "zz"}, headers=headers)
    assert bad.status_code == 400
    assert (await lrs.client.get(path, params={"limit": 0}, headers=headers)).status_code == 400

    unknown = await lrs.client.post(
        f"{path}/11111111-1111-4111-8111-111111111111/replay", headers=headers
    )
    assert unknown.status_code == 404
    one = await lrs.client.post(f"{path}/{letters[0]['statement']}/replay", headers=headers)
    assert one.json() == {"replayed": 1}
    everything = await lrs.client.post(f"{path}/replay", headers=headers)
    assert everything.json() == {"replayed": 4}
    lag = (await lrs.client.get(f"/admin/destinations/{destination_id}", headers=headers)).json()
    assert lag["lag"]["dead"] == 0 and lag["lag"]["pending"] == 5


async def test_source_lifecycle(lrs: LRS) -> None:
    headers = await _admin(lrs)
    body = {
        "name": "upstream",
        "endpoint": NOWHERE,
        "username": "key",
        "password": PASSWORD,
        "params": {
            "verb": "http://adlnet.gov/expapi/verbs/passed",
            "agent": {"mbox": "mailto:a@example.com"},
            "related_activities": True,
        },
        "poll_interval": 300,
        "since": "2026-01-01T00:00:00Z",
        "enabled": False,
    }
    response = await lrs.client.post("/admin/sources", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["password_set"] and PASSWORD not in response.text
    assert created["params"] == {
        "verb": "http://adlnet.gov/expapi/verbs/passed",
        "agent": '{"mbox":"mailto:a@example.com"}',
        "related_activities": "true",
    }
    assert created["checkpoint"] == "2026-01-01T00:00:00.000000Z"
    assert created["pulled"] == 0 and created["next_poll"] is None
    source_id = created["id"]

    poll = await lrs.client.post(f"/admin/sources/{source_id}/poll", headers=headers)
    assert poll.status_code == 409  # disabled

    patched = await lrs.client.patch(
        f"/admin/sources/{source_id}", json={"poll_interval": 600, "name": "x"}, headers=headers
    )
    assert patched.json()["poll_interval"] == 600 and patched.json()["name"] == "x"
    assert patched.json()["checkpoint"] == created["checkpoint"]
    errors = await lrs.client.get(f"/admin/sources/{source_id}/errors", headers=headers)
    assert errors.json() == {"errors": []}
    listed = await lrs.client.get("/admin/sources", headers=headers)
    assert [s["id"] for s in listed.json()["sources"]] == [source_id]
    deleted = await lrs.client.delete(f"/admin/sources/{source_id}", headers=headers)
    assert deleted.status_code == 204
    assert (await lrs.client.get(f"/admin/sources/{source_id}", headers=headers)).status_code == 404


async def test_poll_now_on_a_disabled_source_changes_nothing(lrs: LRS) -> None:
    headers = await _admin(lrs)
    body = {"endpoint": NOWHERE, "poll_interval": 300, "enabled": False}
    created = (await lrs.client.post("/admin/sources", json=body, headers=headers)).json()
    sources = lrs.services.federation.sources
    # As after an earlier poll: the next one is due in a while.
    later = now_micros() + 300_000_000
    await sources.collection.update_one({"_id": created["id"]}, {"$set": {"next_poll_key": later}})
    before = await sources.get("default", created["id"])

    response = await lrs.client.post(f"/admin/sources/{created['id']}/poll", headers=headers)
    assert response.status_code == 409, response.text
    assert await sources.get("default", created["id"]) == before
    missing = await lrs.client.post("/admin/sources/nope/poll", headers=headers)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "body, message",
    [
        ({"endpoint": NOWHERE, "params": {"since": "2020-01-01T00:00:00Z"}}, "unsupported"),
        ({"endpoint": NOWHERE, "params": {"cursor": "x"}}, "unsupported"),
        ({"endpoint": NOWHERE, "since": "yesterday"}, "since"),
        ({"endpoint": "https://key:secret@example.com/xapi/"}, "username and password"),
        ({"endpoint": NOWHERE, "poll_interval": 0}, "poll_interval"),
    ],
)
async def test_source_validation(lrs: LRS, body: dict, message: str) -> None:
    headers = await _admin(lrs)
    response = await lrs.client.post("/admin/sources", json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_secret_box_rotation_and_wrong_key() -> None:
    old = SecretBox(["old passphrase"])
    token = old.encrypt("hello")
    rotated = SecretBox(["new passphrase", "old passphrase"])
    assert rotated.decrypt(token) == "hello"
    with pytest.raises(SecretError):  # the first key encrypts: the old one cannot read it
        old.decrypt(rotated.encrypt("again"))
    with pytest.raises(SecretError):
        SecretBox(["another"]).decrypt(token)
    from cryptography.fernet import Fernet

    fernet_key = Fernet.generate_key().decode()
    assert SecretBox([fernet_key]).decrypt(Fernet(fernet_key).encrypt(b"x").decode()) == "x"


async def test_generated_key_is_kept_in_the_database(tmp_path) -> None:  # noqa: ANN001
    from conftest import make_settings

    from lrs.services import build_services

    settings = make_settings("embedded", tmp_path)
    first = build_services(settings)
    await first.start(background=False)
    token = (await first.federation.keys.box()).encrypt("peer password")
    await first.close()
    second = build_services(settings)
    await second.start(background=False)
    assert (await second.federation.keys.box()).decrypt(token) == "peer password"
    await second.close()
