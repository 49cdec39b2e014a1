"""The federation of one running service: repositories, forwarder, puller and their driver."""

from __future__ import annotations

import httpx

from lrs.config import Settings
from lrs.federation.dispatch import CeleryFederation, FederationDriver, InProcessFederation
from lrs.federation.forwarding import Forwarder, ForwardingSettings
from lrs.federation.pulling import KnownIds, Puller, PullSettings, StoreBatch
from lrs.federation.secrets import SecretKeys
from lrs.storage.database import Database
from lrs.storage.federation import DeliveryRepository, DestinationRepository, SourceRepository
from lrs.storage.statements import StatementRepository


def forwarding_settings(settings: Settings) -> ForwardingSettings:
    return ForwardingSettings(
        batch_size=settings.forward_batch_size,
        max_attempts=settings.forward_max_attempts,
        backoff_base=settings.forward_backoff_base,
        backoff_max=settings.forward_backoff_max,
        timeout=settings.federation_timeout,
        lease=settings.federation_lease,
    )


class Federation:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        statements: StatementRepository,
        store_batch: StoreBatch,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.statements = statements
        self.keys = SecretKeys(database, settings.secret_key)
        self.destinations = DestinationRepository(database)
        self.deliveries = DeliveryRepository(database)
        self.sources = SourceRepository(database)
        self.forwarder = Forwarder(
            statements,
            self.destinations,
            self.deliveries,
            self.keys,
            forwarding_settings(settings),
            transport,
            sources=self.sources,
            public_url=settings.public_url,
        )

        async def known_ids(store: str, ids: list[str]) -> set[str]:
            return set(await statements.find_by_ids(store, ids))

        _known: KnownIds = known_ids
        self.puller = Puller(
            self.sources,
            self.keys,
            store_batch,
            _known,
            settings.public_url,
            PullSettings(timeout=settings.federation_timeout, lease=settings.federation_lease),
            transport,
        )
        self.driver: FederationDriver
        if settings.federation_mode == "celery":
            self.driver = CeleryFederation(
                self, settings.federation_interval, settings.outbox_grace
            )
        else:
            self.driver = InProcessFederation(
                self, settings.federation_interval, settings.outbox_grace
            )

    async def ensure_indexes(self) -> None:
        await self.destinations.ensure_indexes()
        await self.deliveries.ensure_indexes()
        await self.sources.ensure_indexes()

    def after_store(self, store: str, ids: list[str], token: str) -> None:
        self.driver.after_store(store, ids, token)

    async def start(self) -> None:
        await self.driver.start()

    async def close(self) -> None:
        await self.driver.close()
