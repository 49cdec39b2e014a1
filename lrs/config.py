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

    redis_url: str | None = None
    # Progress derivation: "celery" (needs Redis) or "inprocess"; "auto" picks by LRS_REDIS_URL.
    derivation: str = Field(default="auto", pattern="^(auto|celery|inprocess)$")
    # The outbox sweep: how often, and how old an underived statement must be to be re-sent.
    sweep_interval: float = 30.0
    outbox_grace: float = 30.0
    profiles_dir: Path | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    # Base URL used in authority agents (account homePage) and absolute links.
    public_url: str = "http://localhost:8000"

    max_body_bytes: int = 20 * 1024 * 1024
    statement_page_size: int = 100
    max_statement_page_size: int = 1000

    # Bootstrap credential with the `all` and `admin` scopes in `admin_store`, created at start-up.
    admin_key: str | None = None
    admin_secret: str | None = None
    admin_store: str = "default"

    cors_origins: list[str] = Field(default_factory=lambda: ["*"])

    # How long a verified secret is trusted from memory before the slow hash is checked again.
    auth_cache_seconds: float = 60.0

    @property
    def derivation_mode(self) -> str:
        if self.derivation != "auto":
            return self.derivation
        return "celery" if self.redis_url else "inprocess"

    @property
    def storage_kind(self) -> str:
        if self.storage != "auto":
            return self.storage
        return "mongodb" if self.mongodb_url else "embedded"


@lru_cache
def get_settings() -> Settings:
    return Settings()
