"""What `lrs serve` hands to uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lrs.server as server_module
from lrs.config import Settings


def test_idle_connections_outlive_the_clients_own_idle_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx (and uvicorn's default) expire an idle keep-alive connection after 5 s: with the
    # same timer on both sides a client reuses a connection as the server closes it, and that
    # request fails. The server's timer is the setting, longer by default.
    seen: dict[str, Any] = {}

    class Config:
        def __init__(self, app: Any, **options: Any) -> None:
            seen.update(options)

    monkeypatch.setattr(server_module.uvicorn, "Config", Config)
    monkeypatch.setattr(server_module.Server, "__init__", lambda self, config: None)
    monkeypatch.setattr(server_module.Server, "run", lambda self, sockets=None: None)
    settings = Settings(data_dir=tmp_path)
    assert settings.keep_alive_seconds > 5
    server_module._serve_here(settings, "127.0.0.1", 0, "warning")
    assert seen["timeout_keep_alive"] == settings.keep_alive_seconds
    monkeypatch.setenv("LRS_KEEP_ALIVE_SECONDS", "12.5")
    server_module._serve_here(Settings(data_dir=tmp_path), "127.0.0.1", 0, "warning")
    assert seen["timeout_keep_alive"] == 12.5
