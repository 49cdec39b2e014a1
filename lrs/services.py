"""The long-lived objects one running service holds: database, repositories, authenticator.

Created once per process (API or CLI) from the settings; tests build it on an in-memory
database or on a temporary embedded store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from lrs.auth import Authenticator
from lrs.config import Settings
from lrs.events import EventBus, RedisEventBus
from lrs.federation.service import Federation
from lrs.ingestion import AfterStore, Ingestion, IngestionError
from lrs.memory import memory_returner
from lrs.observability import Metrics
from lrs.periodic import Periodic
from lrs.progress.deriver import Deriver
from lrs.progress.dispatch import (
    CeleryDispatcher,
    Dispatcher,
    ElsewhereDispatcher,
    InProcessDispatcher,
)
from lrs.progress.profiles import Profiles, load_profiles
from lrs.storage.activities import ActivityRepository
from lrs.storage.credentials import Credential, CredentialRepository
from lrs.storage.database import Database, open_database
from lrs.storage.documents import DocumentRepository
from lrs.storage.progress import CatalogueRepository, ProgressRepository
from lrs.storage.statements import StatementRepository

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
    # Told of every batch that stored something new (derivation); see Ingestion.
    after_store: list[AfterStore] = field(default_factory=list)
    # Told of every such batch that left a `forward` entry (federation); see Ingestion.
    after_forward: list[AfterStore] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    # Forwarding and pulling (lrs.federation); set by build_services.
    federation: Federation = field(default=None)  # type: ignore[assignment]
    ingestion: Ingestion = field(default=None)  # type: ignore[assignment]
    _memory: Periodic | None = field(default=None, init=False, repr=False)

    async def start(self, background: bool = True) -> None:
        """Prepare storage; with `background`, also the live-event listener and the outbox
        dispatcher (the API process; the CLI and the Celery workers need neither)."""
        await self.statements.ensure_indexes()
        await self.statements.recover_batches()
        migrated = await self.statements.migrate()
        if migrated:
            log.warning("upgraded %d statements stored by an earlier version", migrated)
        await self.credentials.ensure_indexes()
        await self.documents.ensure_indexes()
        await self.activities.ensure_indexes()
        await self.catalogue.ensure_indexes()
        await self.progress.ensure_indexes()
        await self.progress.migrate()
        await self.federation.ensure_indexes()
        if background:
            await self.bus.start()
            await self.dispatcher.start()
            await self.federation.start()
            self._background = True
            self.start_returning_memory()
        s = self.settings
        if s.admin_key and s.admin_secret:
            await self.credentials.ensure(
                s.admin_store, ["all", "admin"], "bootstrap admin", s.admin_key, s.admin_secret
            )

    def start_returning_memory(self) -> None:
        """Hand memory freed after a burst back to the system, every
        `LRS_MEMORY_TRIM_SECONDS` (lrs.memory), until `close`; for long-lived processes."""
        if self._memory is None:
            self._memory = memory_returner(self.settings.memory_trim_seconds)
            if self._memory is not None:
                self._memory.start()

    def own_authority(self) -> dict[str, Any]:
        """The authority of statements the LRS writes itself."""
        return {
            "objectType": "Agent",
            "account": {"homePage": self.settings.public_url, "name": "lrs"},
        }

    async def store_own_statements(self, store: str, statements: list[dict[str, Any]]) -> None:
        """Store statements the LRS itself writes (cmi5 `satisfied`), under its own authority,
        one at a time: one already stored is a no-op, one stored differently earlier (a
        statement is never rewritten) stays as it was."""
        credential = Credential(
            key=f"lrs:{store}",
            store=store,
            scopes=frozenset({"all"}),
            name="the LRS",
            authority=self.own_authority(),
        )
        for statement in statements:
            try:
                await self.ingestion.store(credential, [statement], version="1.0.3", as_list=False)
            except IngestionError as exc:
                if exc.status != 409:
                    raise

    async def close(self) -> None:
        if self._memory is not None:
            await self._memory.stop()
            self._memory = None
        if getattr(self, "_background", False):
            await self.federation.close()
            await self.dispatcher.close()
            await self.bus.close()
        await self.database.close()


def build_services(settings: Settings, database: Database | None = None) -> Services:
    database = database or open_database(settings)
    credentials = CredentialRepository(database, settings.public_url)
    statements = StatementRepository(database, settings.statement_write_lease)
    catalogue = CatalogueRepository(database)
    progress = ProgressRepository(database)
    profiles = load_profiles(settings.profiles_dir) if settings.profiles_dir else load_profiles()
    bus: EventBus
    if settings.redis_url:
        bus = RedisEventBus(settings.redis_url)
    elif settings.workers > 1 or settings.derivation_mode == "process":
        # Several processes and no Redis: each API process polls the store for the changes
        # the others (API processes, the derivation process) made.
        from lrs.progress.live import StorePollingBus

        bus = StorePollingBus(progress)
    else:
        bus = EventBus()
    deriver = Deriver(database, statements, catalogue, progress, profiles, bus)
    dispatcher: Dispatcher
    if settings.derivation_mode == "celery":
        dispatcher = CeleryDispatcher(
            statements.outbox,
            catalogue,
            settings.sweep_interval,
            settings.outbox_grace,
            redis_url=settings.redis_url,
            requeue_after=settings.outbox_requeue_after,
            queue_cap=settings.outbox_queue_cap,
            recover=statements.recover_batches,
        )
    elif settings.derivation_mode == "process":
        dispatcher = ElsewhereDispatcher(
            statements.outbox, catalogue, settings.sweep_interval, settings.outbox_grace
        )
    else:
        dispatcher = InProcessDispatcher(
            statements.outbox,
            catalogue,
            deriver,
            settings.sweep_interval,
            recover=statements.recover_batches,
            # Alone, a process knows what it is deriving; beside others (`--workers`), what is
            # recent may be theirs: the sweep leaves it to them for the grace period.
            grace=settings.outbox_grace if settings.workers > 1 else 0.0,
        )
    services = Services(
        settings=settings,
        database=database,
        statements=statements,
        credentials=credentials,
        authenticator=Authenticator(
            credentials,
            settings.auth_cache_seconds,
            paced=isinstance(dispatcher, InProcessDispatcher),
        ),
        documents=DocumentRepository(database),
        activities=ActivityRepository(database),
        catalogue=catalogue,
        progress=progress,
        profiles=profiles,
        bus=bus,
        deriver=deriver,
        dispatcher=dispatcher,
    )
    deriver.on_grown = dispatcher.grown
    deriver.emit = services.store_own_statements
    deriver.own_authority = services.own_authority()
    services.ingestion = Ingestion(
        statements,
        services.activities,
        services.metrics,
        services.after_store,
        services.after_forward,
    )
    services.after_store.append(dispatcher.after_store)
    # Pulled statements go through the same path as the API's, hooks included.
    services.federation = Federation(settings, database, statements, services.ingestion.store)
    services.after_forward.append(services.federation.after_store)
    return services
