"""Credentials (issues 12 and 13): revocation at once in every process, the cheap check on the
hot path, throttled failures, secrets verified off the event loop at the same cost for unknown
keys, the admin API and the CLI on one implementation, learner paths out of access logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import lrs.auth as auth_module
from lrs.app import create_app
from lrs.auth import SharedRead
from lrs.observability import JsonFormatter
from lrs.services import Services, build_services
from lrs.storage.credentials import new_key, unknown_key_hash
from lrs.storage.database import open_database
from lrs.throttle import FailureThrottle
from tests.conftest import LRS, basic_auth, make_settings

V = {"X-Experience-API-Version": "1.0.3"}


async def status(client: httpx.AsyncClient, auth: str, path: str = "/xapi/statements") -> int:
    return (await client.get(path, headers={**V, "Authorization": auth})).status_code


@pytest.fixture
async def app_with(backend: str, tmp_path: Path) -> AsyncIterator[Any]:
    """`await make(**settings)` -> (client, services): an API with its own settings; a second
    call shares the first one's database (another API process on the same store)."""
    opened: list[tuple[httpx.AsyncClient, Services]] = []
    shared: dict[str, Any] = {}

    async def make(**overrides: Any) -> tuple[httpx.AsyncClient, Services]:
        if "settings" not in shared:
            shared["settings"] = make_settings(backend, tmp_path, **overrides)
            shared["database"] = open_database(shared["settings"])
        settings = shared["settings"].model_copy(update=overrides)
        services = build_services(settings, shared["database"])
        await services.start(background=False)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, services)),
            base_url="http://lrs.test",
        )
        opened.append((client, services))
        return client, services

    yield make
    for client, _ in opened:
        await client.aclose()
    if opened:
        await opened[0][1].close()


# --- revocation ----------------------------------------------------------------------------------


async def test_revocation_takes_effect_at_once_in_every_api_process(app_with: Any) -> None:
    """A credential verified (and so remembered) by two API processes on one store is refused
    by both on their very next request once either revokes it: no cache period."""
    first, services = await app_with()
    second, _ = await app_with()
    admin, admin_secret = await services.credentials.create("default", ["all", "admin"], "a")
    user, user_secret = await services.credentials.create("default", ["all"], "u")
    admin_auth = basic_auth(admin.key, admin_secret)
    user_auth = basic_auth(user.key, user_secret)
    for client in (first, second, first, second):
        assert await status(client, user_auth) == 200
    response = await second.delete(
        f"/admin/credentials/{user.key}", headers={**V, "Authorization": admin_auth}
    )
    assert response.status_code == 204
    assert await status(first, user_auth) == 401
    assert await status(second, user_auth) == 401
    # Others are unaffected.
    assert await status(first, admin_auth) == 200


def test_new_keys_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key starting with "-" reads as an option on a command line (`lrs credentials revoke
    KEY` refused one key in 64): such draws are drawn again."""
    import secrets

    draws = iter(["-starts-with-a-dash", "_fine-key"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _n: next(draws))
    assert new_key() == "_fine-key"


def test_revocation_by_the_cli_reaches_a_running_api_process(tmp_path: Path) -> None:
    """`lrs credentials revoke KEY`, another process on the same embedded store, takes effect
    in the running API at once."""
    settings = make_settings("embedded", tmp_path)

    async def scenario() -> None:
        services = build_services(settings)
        await services.start(background=False)
        created, secret = await services.credentials.create("default", ["all"], "cli target")
        auth = basic_auth(created.key, secret)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, services)),
            base_url="http://lrs.test",
        ) as client:
            assert await status(client, auth) == 200
            assert await status(client, auth) == 200  # now from memory
            env = {k: v for k, v in os.environ.items() if not k.startswith("LRS_")}
            env |= {
                "LRS_STORAGE": "embedded",
                "LRS_DATA_DIR": str(settings.data_dir),
                "LRS_DATABASE": settings.database,
            }
            revoked = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "lrs.cli", "credentials", "revoke", created.key],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert revoked.returncode == 0, revoked.stderr
            assert await status(client, auth) == 401
        await services.close()

    asyncio.run(scenario())


def _record_slow_checks(
    monkeypatch: pytest.MonkeyPatch, gate: threading.Event | None = None
) -> list[str]:
    """The secrets the slow hash checks from now on, in order; with `gate`, each check waits
    until it is set."""
    checked: list[str] = []
    verify = auth_module.verify_secret

    def recording(secret: str, secret_hash: str) -> bool:
        checked.append(secret)
        if gate is not None:
            assert gate.wait(30)
        return verify(secret, secret_hash)

    monkeypatch.setattr(auth_module, "verify_secret", recording)
    return checked


async def test_hot_path_runs_no_slow_hash_and_one_shared_revision_read(
    lrs: LRS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once verified, a secret is not hashed again while nothing changed; each request reads
    the credentials revision once at most, and requests arriving together share the read.
    A revocation elsewhere re-reads the credential, still without the slow hash."""
    hashed = _record_slow_checks(monkeypatch)
    reads = 0
    revision = lrs.services.credentials.revision

    async def counted_revision() -> int:
        nonlocal reads
        reads += 1
        return await revision()

    lrs.services.authenticator._revision = SharedRead(counted_revision)
    assert await status(lrs.client, lrs.auth, "/xapi/about") == 200  # no authentication
    assert await status(lrs.client, lrs.auth) == 200
    assert len(hashed) == 1
    results = await asyncio.gather(*(status(lrs.client, lrs.auth) for _ in range(20)))
    assert results == [200] * 20 and len(hashed) == 1
    assert 1 <= reads <= 21
    other, _ = await lrs.services.credentials.create("default", ["all"], "other")
    await lrs.services.credentials.revoke(other.key)
    assert await status(lrs.client, lrs.auth) == 200
    assert len(hashed) == 1


async def test_a_burst_of_requests_with_new_credentials_shares_one_slow_hash(
    lrs: LRS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's connections arriving together before (or once the remembered check expired)
    any was verified wait for one slow check, instead of one each queued on the verifier's two
    threads; a wrong secret in the same burst is still refused on its own check."""
    hashed = _record_slow_checks(monkeypatch)
    credential, secret = await lrs.services.credentials.create("default", ["all"], "burst")
    right = basic_auth(credential.key, secret)
    wrong = basic_auth(credential.key, secret + "x")
    results = await asyncio.gather(
        *(status(lrs.client, right) for _ in range(12)), status(lrs.client, wrong)
    )
    assert results == [200] * 12 + [401]
    assert sorted(hashed) == sorted([secret, secret + "x"])


async def test_a_remembered_check_is_renewed_in_the_background_before_it_expires(
    lrs: LRS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that keeps using its credential never waits for the slow hash again: in the
    last quarter of the remembered check's life a request is answered from memory while the
    check runs again in the background, which extends it; a secret that no longer verifies is
    forgotten by the renewal."""
    gate = threading.Event()
    gate.set()
    hashed = _record_slow_checks(monkeypatch, gate)
    clock = [1000.0]
    monkeypatch.setattr(auth_module, "time", type("Clock", (), {"monotonic": lambda: clock[0]}))
    credential, secret = await lrs.services.credentials.create("default", ["all"], "renewed")
    authenticator = auth_module.Authenticator(lrs.services.credentials, cache_seconds=100)
    header = basic_auth(credential.key, secret)
    assert (await authenticator.authenticate(header)).key == credential.key
    assert len(hashed) == 1
    clock[0] += 80  # in the last quarter: renewed in the background
    gate.clear()  # the renewal's slow hash cannot finish: the request must not wait for it
    served = await asyncio.wait_for(authenticator.authenticate(header), timeout=10)
    assert served.key == credential.key
    renewal = authenticator._renewals[credential.key]
    gate.set()
    await renewal
    assert len(hashed) == 2
    clock[0] += 60  # past the first check's expiry, within the renewed one: no slow hash
    assert (await authenticator.authenticate(header)).key == credential.key
    assert len(hashed) == 2
    # The stored secret replaced behind the revision's back (only the renewal can notice).
    known = authenticator._verified[credential.key]
    authenticator._verified[credential.key] = auth_module._Verified(
        known.fingerprint, known.credential, unknown_key_hash(), known.revision, known.expires
    )
    monkeypatch.setattr(
        lrs.services.credentials,
        "lookup",
        _returning((credential, unknown_key_hash())),
    )
    clock[0] += 20  # the last quarter of the renewed check
    await authenticator.authenticate(header)
    await authenticator._renewals[credential.key]
    assert credential.key not in authenticator._verified


def _returning(value: Any) -> Any:
    async def lookup(key: str) -> Any:
        return value

    return lookup


async def test_shared_read_never_answers_with_a_value_read_before_the_caller_asked() -> None:
    """The revision a request gets comes from a read that started after the request arrived
    (so a revocation that completed before it is seen), shared with the requests that arrived
    while the previous read ran."""
    value = 0
    started: list[int] = []
    gate = asyncio.Event()

    async def read() -> int:
        seen = value  # what the store holds when the read starts
        started.append(seen)
        await gate.wait()
        return seen

    shared = SharedRead(read)
    first = asyncio.ensure_future(shared.get())
    while not started:  # the first read starts, and waits
        await asyncio.sleep(0)
    value = 1  # a revocation completes
    later = [asyncio.ensure_future(shared.get()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 0  # it asked before the revocation
    assert [await task for task in later] == [1] * 5
    assert started == [0, 1]  # one read for the first caller, one shared by the five


# --- throttling and cost -------------------------------------------------------------------------


async def test_failed_attempts_are_throttled_per_key_429_with_retry_after(app_with: Any) -> None:
    """Past the failures allowed for a key, its requests are refused with 429 and Retry-After
    without their secret being checked (the right one too, for that while); other keys are
    not affected."""
    client, services = await app_with(auth_failures_per_key="3/minute")
    target, secret = await services.credentials.create("default", ["all"], "target")
    other, other_secret = await services.credentials.create("default", ["all"], "other")
    wrong = basic_auth(target.key, "guess")
    assert [await status(client, wrong) for _ in range(3)] == [401] * 3
    response = await client.get("/xapi/statements", headers={**V, "Authorization": wrong})
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert await status(client, basic_auth(target.key, secret)) == 429
    assert await status(client, basic_auth(other.key, other_secret)) == 200


async def test_failed_attempts_are_throttled_per_client_address(app_with: Any) -> None:
    """Guessing many keys from one address is throttled too (unknown keys count)."""
    client, services = await app_with(auth_failures_per_address="4/minute")
    statuses = [await status(client, basic_auth(f"guess-{n}", "x")) for n in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    created, secret = await services.credentials.create("default", ["all"], "late")
    assert await status(client, basic_auth(created.key, secret)) == 429


async def test_failure_counts_are_shared_through_redis(redis_url: str) -> None:
    """With LRS_REDIS_URL every API process counts in the same place: failures spread over
    two processes reach the limit together."""
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis")
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    first = FailureThrottle("3/minute", "100/minute", redis_url, namespace)
    second = FailureThrottle("3/minute", "100/minute", redis_url, namespace)
    try:
        await first.failed("k", "10.0.0.1")
        await second.failed("k", "10.0.0.2")
        assert await first.retry_after("k", "10.0.0.3") is None
        await first.failed("k", "10.0.0.1")
        wait = await second.retry_after("k", "10.0.0.4")
        assert wait is not None and 1 <= wait <= 60
        assert await second.retry_after("another key", "10.0.0.4") is None
    finally:
        await first.reset()


async def test_throttling_fails_open_when_its_store_is_down() -> None:
    """Redis unreachable: authentication goes on unthrottled rather than refusing all."""
    throttle = FailureThrottle("1/minute", "1/minute", "redis://127.0.0.1:9/0", "x")
    await throttle.failed("k", "a")
    await throttle.failed("k", "a")
    assert await throttle.retry_after("k", "a") is None


async def test_secrets_are_verified_off_the_event_loop_and_unknown_keys_cost_the_same(
    lrs: LRS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slow hash runs on a worker thread, never on the event loop; an unknown key is
    checked against a dummy hash (one slow check, as for a known key with a wrong secret), so
    answering does not tell which keys exist."""
    checks: list[tuple[str, int]] = []
    verify = auth_module.verify_secret

    def recording(secret: str, secret_hash: str) -> bool:
        checks.append((secret_hash, threading.get_ident()))
        return verify(secret, secret_hash)

    monkeypatch.setattr(auth_module, "verify_secret", recording)
    known = lrs.auth
    created, _ = await lrs.services.credentials.create("default", ["all"], "k")
    assert await status(lrs.client, basic_auth("no-such-key", "x")) == 401
    assert await status(lrs.client, basic_auth(created.key, "wrong")) == 401
    assert await status(lrs.client, known) == 200
    loop_thread = threading.get_ident()
    assert [h == unknown_key_hash() for h, _ in checks] == [True, False, False]
    assert all(thread != loop_thread for _, thread in checks)


# --- the admin API and the CLI -------------------------------------------------------------------


async def test_admin_credentials_api_create_list_revoke(lrs: LRS) -> None:
    """POST answers the secret once; GET lists the store's credentials, never a secret or its
    hash; DELETE and POST .../revoke revoke; each needs the `admin` scope."""
    response = await lrs.client.post(
        "/admin/credentials",
        json={"scopes": ["statements/write", "statements/read"], "name": "quiz"},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["store"] == "default" and created["name"] == "quiz"
    assert created["scopes"] == ["statements/read", "statements/write"]
    assert response.headers["Cache-Control"] == "no-store"
    new_auth = basic_auth(created["key"], created["secret"])
    assert await status(lrs.client, new_auth) == 200

    listed = (await lrs.client.get("/admin/credentials")).json()["credentials"]
    assert created["key"] in {c["key"] for c in listed}
    rendered = json.dumps(listed)
    assert (
        created["secret"] not in rendered and "scrypt" not in rendered and "secret" not in rendered
    )

    response = await lrs.client.post(f"/admin/credentials/{created['key']}/revoke")
    assert response.status_code == 200 and response.json()["revoked"] is True
    assert await status(lrs.client, new_auth) == 401
    again = (await lrs.client.post("/admin/credentials", json={"scopes": "all"})).json()
    assert (await lrs.client.delete(f"/admin/credentials/{again['key']}")).status_code == 204
    assert await status(lrs.client, basic_auth(again["key"], again["secret"])) == 401

    no_admin = await lrs.credential(["all"])
    for method, path in (
        ("GET", "/admin/credentials"),
        ("POST", "/admin/credentials"),
        ("DELETE", f"/admin/credentials/{again['key']}"),
    ):
        response = await lrs.client.request(
            method, path, json={"scopes": "all"}, headers={"Authorization": no_admin}
        )
        assert response.status_code == 403, (method, path)


async def test_an_admin_manages_only_its_own_stores_credentials(lrs: LRS) -> None:
    """Stores are tenants: an admin of one cannot create, see or revoke another's credentials
    (another store's key is answered as unknown)."""
    elsewhere, elsewhere_secret = await lrs.services.credentials.create("acme", ["all"], "acme")
    response = await lrs.client.post("/admin/credentials", json={"scopes": "all", "store": "acme"})
    assert response.status_code == 403
    assert "own store" in response.json()["error"]
    own = await lrs.client.post("/admin/credentials", json={"scopes": "all", "store": "default"})
    assert own.status_code == 201
    listed = (await lrs.client.get("/admin/credentials")).json()["credentials"]
    assert {c["store"] for c in listed} == {"default"}
    assert elsewhere.key not in {c["key"] for c in listed}
    assert (await lrs.client.delete(f"/admin/credentials/{elsewhere.key}")).status_code == 404
    assert await status(lrs.client, basic_auth(elsewhere.key, elsewhere_secret)) == 200


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": ["everything"]},
        {"scopes": []},
        {"scopes": "all", "name": "x" * 500},
        {"scopes": "all", "extra": 1},
        {"name": "no scopes"},
        {"scopes": [{"deep": [[[]]]}]},
    ],
)
async def test_admin_credentials_api_refuses_bad_requests(lrs: LRS, body: dict) -> None:
    before = len(await lrs.services.credentials.list())
    response = await lrs.client.post("/admin/credentials", json=body)
    assert response.status_code == 400, response.text
    assert len(await lrs.services.credentials.list()) == before


def test_cli_and_api_share_one_implementation(tmp_path: Path) -> None:
    """A credential created by `lrs credentials create` is listed and revoked by the API, and
    the CLI refuses what the API refuses, with the same message."""
    settings = make_settings("embedded", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRS_")}
    env |= {
        "LRS_STORAGE": "embedded",
        "LRS_DATA_DIR": str(settings.data_dir),
        "LRS_DATABASE": settings.database,
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lrs.cli", "credentials", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    made = cli("create", "--store", "default", "--scopes", "all,admin", "--name", "ops")
    assert made.returncode == 0, made.stderr
    fields = dict(line.split(":", 1) for line in made.stdout.splitlines())
    key, secret = fields["key"].strip(), fields["secret"].strip()
    refused = cli("create", "--store", "default", "--scopes", "all,everything")
    assert refused.returncode != 0

    async def scenario() -> str:
        services = build_services(settings)
        await services.start(background=False)
        auth = {**V, "Authorization": basic_auth(key, secret)}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, services)),
            base_url="http://lrs.test",
            headers=auth,
        ) as client:
            listed = (await client.get("/admin/credentials")).json()["credentials"]
            assert [c["name"] for c in listed if c["key"] == key] == ["ops"]
            api_refusal = await client.post("/admin/credentials", json={"scopes": "all,everything"})
            assert api_refusal.status_code == 400
            made = (await client.post("/admin/credentials", json={"scopes": "all"})).json()
        await services.close()
        return api_refusal.json()["error"] + "\n" + made["key"]

    api_error, api_key = asyncio.run(scenario()).split("\n")
    assert api_error in refused.stderr
    assert cli("revoke", api_key).returncode == 0
    assert "revoked" in cli("list", "--store", "default").stdout


# --- access logs ---------------------------------------------------------------------------------


async def test_access_log_shows_the_route_template_for_learner_paths(
    lrs: LRS, caplog: pytest.LogCaptureFixture
) -> None:
    """A learner in a URL path (an e-mail address) never reaches the access log: such routes
    are logged by their template."""
    learner = "mbox:mailto:ada.lovelace@example.com"
    path = f"/progress/learners/{learner.replace(':', '%3A').replace('@', '%40')}/courses/c"
    with caplog.at_level(logging.INFO, logger="lrs.access"):
        await lrs.client.get(path)
        await lrs.client.head(path)
        await lrs.client.get("/xapi/statements")
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    assert len(lines) == 3
    assert [line["path"] for line in lines[:2]] == ["/progress/learners/{rest:path}"] * 2
    assert lines[2]["path"] == "/xapi/statements" and lines[2]["route"] == "/xapi/statements"
    assert "lovelace" not in json.dumps(lines)
