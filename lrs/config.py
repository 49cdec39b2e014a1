"""Service configuration: environment variables with the LRS_ prefix (or a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LRS_", env_file=".env", extra="ignore")

    # Storage: a MongoDB URL selects the production path; without one the embedded store is used.
    mongodb_url: str | None = None
    database: str = "lrs"
    data_dir: Path = Path(".lrs-data")
    # "memory" keeps everything in RAM (tests, throwaway demos); not for production.
    storage: str = Field(default="auto", pattern="^(auto|mongodb|embedded|memory)$")
    # Embedded store: "full" syncs each commit to disk before the write is acknowledged, so an
    # acknowledged statement survives a power cut or an OS crash; "normal" only survives a
    # crash of the process (a power cut may lose the last commits, never the file) and takes
    # 5-12% more single POSTs/s (README, Configuration).
    embedded_synchronous: str = Field(default="full", pattern="^(full|normal)$")
    # Embedded store: the most memory SQLite keeps of the file's pages, per connection (the
    # derivation process keeps at most DERIVATION_CACHE_MIB, lrs.derivation_process).
    embedded_cache_mib: int = Field(default=64, ge=1, le=65536)
    # Long-lived processes (API, derivation, Celery workers) hand memory freed after a burst
    # back to the system this often, in seconds (lrs.memory; glibc only); 0: never.
    memory_trim_seconds: float = Field(default=10.0, ge=0)

    redis_url: str | None = None
    # Progress derivation: "celery" (needs Redis), "inprocess" (in the API process) or
    # "process" (a derivation process `lrs serve` runs beside the API processes, on a core of
    # its own); "auto" picks by LRS_REDIS_URL.
    derivation: str = Field(default="auto", pattern="^(auto|celery|inprocess|process)$")
    # The outbox sweep: how often, and how old an underived statement must be to be re-sent.
    sweep_interval: float = 30.0
    outbox_grace: float = 30.0
    # With Celery: the sweep enqueues a statement again at most once per this many seconds
    # (it may still be waiting in the broker), and adds nothing while this many messages wait
    # in the broker's queue with no worker taking them.
    outbox_requeue_after: float = 300.0
    outbox_queue_cap: int = 1000
    profiles_dir: Path | None = None
    # The Celery queue this LRS's tasks go to and its workers take them from. Two LRSs on one
    # Redis database need different queues (better: different databases, since the live
    # events and the sweep's markers are named by store, not by LRS).
    celery_queue: str = Field(default="celery", min_length=1)
    # Where `lrs beat` keeps its schedule state (a file it rewrites): a writable path.
    beat_schedule: Path = Path("celerybeat-schedule")

    host: str = "127.0.0.1"
    port: int = 8000
    # API processes `lrs serve` runs (one per core to use). See the README: on the embedded
    # store they share one database file; without Redis their SSE clients are served by
    # polling the store for changes (lrs.progress.live).
    workers: int = Field(default=1, ge=1, le=64)
    # How long an idle keep-alive connection stays open. Longer than clients' own idle expiry
    # (httpx and many pools use 5 s, uvicorn's default too): with equal timers a client reuses a
    # connection at the moment the server closes it, and that request fails (ReadError).
    keep_alive_seconds: float = Field(default=65.0, gt=0)
    # Base URL used in authority agents (account homePage) and absolute links.
    public_url: str = "http://localhost:8000"

    # MongoDB: a statement batch must commit within this many seconds; a batch left pending
    # longer (its writer died) is aborted by whoever needs its ids, and by the outbox sweep.
    statement_write_lease: float = Field(default=30.0, gt=0)

    max_body_bytes: int = 20 * 1024 * 1024
    statement_page_size: int = 100
    max_statement_page_size: int = 1000

    # Bootstrap credential with the `all` and `admin` scopes in `admin_store`, created at start-up.
    admin_key: str | None = None
    admin_secret: str | None = None
    admin_store: str = "default"

    cors_origins: list[str] = Field(default_factory=lambda: ["*"])

    # The xAPI version assumed for a request without X-Experience-API-Version (the version
    # header of its 400 answer, and of the other routes' responses).
    default_xapi_version: str = Field(default="2.0.0", pattern=r"^(1\.0\.[0-3]|2\.0\.0)$")

    # A verified secret is trusted from memory while the credentials revision is unchanged (a
    # revocation bumps it, so it takes effect at once in every process), and at most this long
    # before the slow hash is checked again.
    auth_cache_seconds: float = 60.0
    # Failed authentication attempts allowed per credential key and per client address (moving
    # windows, `limits` notation such as "20/minute"); beyond them 429 with Retry-After. Counted
    # in Redis when LRS_REDIS_URL is set (shared by all API processes), else in memory.
    auth_failures_per_key: str = "20/minute"
    auth_failures_per_address: str = "60/minute"

    # Federation (design notes section 7): forwarding to destinations, pulling from sources.
    # Fernet keys or passphrases (comma-separated; the first encrypts, all decrypt) protecting
    # the peer credentials in the database; unset: a key generated once, kept in the database.
    secret_key: str | None = None
    # "celery" (needs Redis) or "inprocess"; "auto" picks by LRS_REDIS_URL, like derivation.
    federation: str = Field(default="auto", pattern="^(auto|celery|inprocess)$")
    # How often due deliveries and polls are looked for (in-process loop, API sweep and beat).
    federation_interval: float = 2.0
    forward_batch_size: int = Field(default=100, ge=1, le=1000)
    # Retries: exponential back-off from the base, capped, with jitter; after the last attempt
    # a statement becomes a dead letter. The defaults retry for about three hours.
    forward_max_attempts: int = Field(default=20, ge=1)
    forward_backoff_base: float = 2.0
    forward_backoff_max: float = 900.0
    federation_timeout: float = 30.0  # seconds per request to a peer
    # A sender or poller that dies holds its destination or source at most this long.
    federation_lease: float = 120.0

    @property
    def derivation_mode(self) -> str:
        if self.derivation != "auto":
            return self.derivation
        return "celery" if self.redis_url else "inprocess"

    @property
    def federation_mode(self) -> str:
        if self.federation != "auto":
            return self.federation
        return "celery" if self.redis_url else "inprocess"

    @property
    def storage_kind(self) -> str:
        if self.storage != "auto":
            return self.storage
        return "mongodb" if self.mongodb_url else "embedded"


@lru_cache
def get_settings() -> Settings:
    return Settings()
