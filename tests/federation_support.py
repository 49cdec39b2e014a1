"""Fixtures and helpers for the federation tests: a sender LRS (in-process, memory or embedded
store, fast retry settings) driven through its admin API, and a peer LRS that is a real uvicorn
server of this app on a loopback port (lrs.federation.loopback).

Test modules import the fixtures by name: `from federation_support import peer, sender`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lrs.app import create_app
from lrs.config import Settings
from lrs.federation.loopback import LoopbackLRS, basic_auth
from lrs.services import Services, build_services

# Retries in tens of milliseconds, so a test of "four attempts then dead" takes a second.
FAST: dict[str, Any] = {
    "federation_interval": 0.05,
    "forward_backoff_base": 0.05,
    "forward_backoff_max": 0.2,
    "forward_max_attempts": 4,
    "outbox_grace": 0.3,
    "federation_timeout": 5.0,
}
VERB = "http://adlnet.gov/expapi/verbs/experienced"


def make_statement(n: int, verb: str = VERB, activity: str | None = None, **extra: Any) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "actor": {"objectType": "Agent", "mbox": f"mailto:learner{n % 7}@example.com"},
        "verb": {"id": verb, "display": {"en-US": verb.rsplit("/", 1)[-1]}},
        "object": {"objectType": "Activity", "id": activity or f"http://example.com/act/{n}"},
        **extra,
    }


def peer_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "storage": "memory",
        "data_dir": tmp_path / "peer",
        "database": f"peer_{uuid.uuid4().hex[:8]}",
        "redis_url": None,
        "auth_cache_seconds": 600.0,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Peer:
    lrs: LoopbackLRS
    key: str
    secret: str

    @property
    def endpoint(self) -> str:
        return self.lrs.endpoint

    def ids(self, store: str = "default") -> set[str]:
        return self.lrs.statement_ids(store)

    async def post(self, statements: list[dict[str, Any]], version: str = "1.0.3") -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                self.endpoint + "statements",
                json=statements,
                headers={
                    "Authorization": basic_auth(self.key, self.secret),
                    "X-Experience-API-Version": version,
                },
            )
            assert response.status_code == 200, response.text


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    lrs = LoopbackLRS(peer_settings(tmp_path))
    try:
        lrs.start()
        key, secret = lrs.credential(["statements/write", "statements/read"])
        yield Peer(lrs, key, secret)
    finally:
        lrs.close()


@dataclass
class Sender:
    services: Services
    client: httpx.AsyncClient  # admin + all

    async def post(self, statements: list[dict[str, Any]]) -> list[str]:
        response = await self.client.post("/xapi/statements", json=statements)
        assert response.status_code == 200, response.text
        return response.json()

    async def create_destination(self, peer: Peer, **fields: Any) -> dict[str, Any]:
        body = {"name": "peer", "endpoint": peer.endpoint, "username": peer.key}
        body["password"] = peer.secret
        body.update(fields)
        response = await self.client.post("/admin/destinations", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    async def destination(self, destination_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/admin/destinations/{destination_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def lag(self, destination_id: str) -> dict[str, Any]:
        return (await self.destination(destination_id))["lag"]

    async def dead_letters(self, destination_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/admin/destinations/{destination_id}/dead-letters")
        assert response.status_code == 200, response.text
        return response.json()["dead_letters"]


def sender_settings(backend: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "storage": backend,
        "data_dir": tmp_path / "sender",
        "database": f"sender_{uuid.uuid4().hex[:8]}",
        "redis_url": None,
        **FAST,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=["memory", "embedded"])
async def sender(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sender]:
    settings = sender_settings(request.param, tmp_path)
    services = build_services(settings)
    await services.start()
    created, secret = await services.credentials.create("default", ["all", "admin"], "t")
    app = create_app(settings, services)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://sender.test",
        headers={
            "Authorization": basic_auth(created.key, secret),
            "X-Experience-API-Version": "1.0.3",
        },
    ) as client:
        yield Sender(services, client)
    await services.close()


async def eventually(
    check: Callable[[], Any], timeout: float = 15.0, message: str = "condition"
) -> Any:
    """Poll an (a)sync condition until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.05)
