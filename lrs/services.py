"""The long-lived objects one running service holds: database, repositories, authenticator.

Created once per process (API or CLI) from the settings; tests build it on an in-memory
database or on a temporary embedded store.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lrs.auth import Authenticator
from lrs.config import Settings
from lrs.storage.credentials import CredentialRepository
from lrs.storage.database import Database, open_database
from lrs.storage.statements import StatementRepository

# Called with (store, newly stored statements) after every successful statement write.
StoredHook = Callable[[str, list[dict[str, Any]]], Awaitable[None]]


@dataclass
class Services:
    settings: Settings
    database: Database
    statements: StatementRepository
    credentials: CredentialRepository
    authenticator: Authenticator
    after_store: list[StoredHook] = field(default_factory=list)
    # stored keys of writes in progress in this process, for X-Experience-API-Consistent-Through
    writes_in_flight: set[int] = field(default_factory=set)

    def consistent_through_micros(self) -> int:
        now = time.time_ns() // 1000
        if self.writes_in_flight:
            return min(min(self.writes_in_flight) - 1, now)
        return now

    async def start(self) -> None:
        await self.statements.ensure_indexes()
        await self.credentials.ensure_indexes()
        s = self.settings
        if s.admin_key and s.admin_secret:
            await self.credentials.ensure(
                s.admin_store, ["all", "admin"], "bootstrap admin", s.admin_key, s.admin_secret
            )

    async def close(self) -> None:
        await self.database.close()


def build_services(settings: Settings, database: Database | None = None) -> Services:
    database = database or open_database(settings)
    credentials = CredentialRepository(database, settings.public_url)
    return Services(
        settings=settings,
        database=database,
        statements=StatementRepository(database),
        credentials=credentials,
        authenticator=Authenticator(credentials, settings.auth_cache_seconds),
    )
