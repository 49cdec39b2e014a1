"""The long-lived objects one running service holds: database, repositories, authenticator.

Created once per process (API or CLI) from the settings; tests build it on an in-memory
database or on a temporary embedded store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lrs.auth import Authenticator
from lrs.config import Settings
from lrs.events import EventBus, RedisEventBus
from lrs.federation.service import Federation
from lrs.observability import Metrics
from lrs.progress.deriver import Deriver
from lrs.progress.dispatch import CeleryDispatcher, Dispatcher, InProcessDispatcher
from lrs.progress.profiles import Profiles, load_profiles
from lrs.storage.activities import ActivityRepository
from lrs.storage.credentials import CredentialRepository
from lrs.storage.database import Database, open_database
from lrs.storage.documents import DocumentRepository
from lrs.storage.progress import CatalogueRepository, ProgressRepository
from lrs.storage.statements import StatementRepository

# Called with (store, newly stored statements) after every successful statement write.
StoredHook = Callable[[str, list[dict[str, Any]]], Awaitable[None]]

log = logging.getLogger("lrs.services")


@dataclass
class Services:
    settings: Settings
    database: Database
    statements: StatementRepository
    credentials: CredentialRepository
    authenticator: Authenticator
    documents: DocumentRepository
    activities: ActivityRepository
    catalogue: CatalogueRepository
    progress: ProgressRepository
    profiles: Profiles
    bus: EventBus
    deriver: Deriver
    dispatcher: Dispatcher
    after_store: list[StoredHook] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    # stored keys of writes in progress in this process, for X-Experience-API-Consistent-Through
    writes_in_flight: set[int] = field(default_factory=set)
    # Forwarding and pulling (lrs.federation); set by build_services.
    federation: Federation = field(default=None)  # type: ignore[assignment]

    def consistent_through_micros(self) -> int:
        now = time.time_ns() // 1000
        if self.writes_in_flight:
            return min(min(self.writes_in_flight) - 1, now)
        return now

    async def start(self, background: bool = True) -> None:
        """Prepare storage; with `background`, also the live-event listener and the outbox
        dispatcher (the API process; the CLI and the Celery workers need neither)."""
        await self.statements.ensure_indexes()
        migrated = await self.statements.migrate()
        if migrated:
            log.warning("upgraded %d statements stored by an earlier version", migrated)
        await self.credentials.ensure_indexes()
        await self.documents.ensure_indexes()
        await self.activities.ensure_indexes()
        await self.catalogue.ensure_indexes()
        await self.progress.ensure_indexes()
        await self.federation.ensure_indexes()
        if background:
            await self.bus.start()
            await self.dispatcher.start()
            await self.federation.start()
            self._background = True
        s = self.settings
        if s.admin_key and s.admin_secret:
            await self.credentials.ensure(
                s.admin_store, ["all", "admin"], "bootstrap admin", s.admin_key, s.admin_secret
            )

    async def close(self) -> None:
        if getattr(self, "_background", False):
            await self.federation.close()
            await self.dispatcher.close()
            await self.bus.close()
        await self.database.close()


def build_services(settings: Settings, database: Database | None = None) -> Services:
    database = database or open_database(settings)
    credentials = CredentialRepository(database, settings.public_url)
    statements = StatementRepository(database)
    catalogue = CatalogueRepository(database)
    progress = ProgressRepository(database)
    profiles = load_profiles(settings.profiles_dir) if settings.profiles_dir else load_profiles()
    bus: EventBus = RedisEventBus(settings.redis_url) if settings.redis_url else EventBus()
    deriver = Deriver(statements, catalogue, progress, profiles, bus)
    dispatcher: Dispatcher
    if settings.derivation_mode == "celery":
        dispatcher = CeleryDispatcher(
            statements,
            catalogue,
            settings.sweep_interval,
            settings.outbox_grace,
            redis_url=settings.redis_url,
            requeue_after=settings.outbox_requeue_after,
            queue_cap=settings.outbox_queue_cap,
        )
    else:
        dispatcher = InProcessDispatcher(statements, catalogue, deriver, settings.sweep_interval)
    services = Services(
        settings=settings,
        database=database,
        statements=statements,
        credentials=credentials,
        authenticator=Authenticator(credentials, settings.auth_cache_seconds),
        documents=DocumentRepository(database),
        activities=ActivityRepository(database),
        catalogue=catalogue,
        progress=progress,
        profiles=profiles,
        bus=bus,
        deriver=deriver,
        dispatcher=dispatcher,
    )
    services.after_store.append(dispatcher.after_store)

    async def store_batch(credential: Any, batch: list[Any], version: str, parts: Any) -> Any:
        # Pulled statements go through the same path as the API's, hooks included.
        from lrs.api.statements import store_statements

        return await store_statements(services, credential, batch, version=version, parts=parts)

    services.federation = Federation(settings, database, statements, store_batch)
    services.after_store.append(services.federation.after_store)
    return services
