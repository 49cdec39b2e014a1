"""A Celery worker process returns memory freed after a burst, as the API does (lrs.memory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrs import memory
from lrs.config import Settings
from lrs.services import Services, build_services
from workers import runtime


@pytest.mark.skipif(not memory.can_return_memory(), reason="malloc_trim is glibc's")
def test_a_worker_runtime_returns_memory_until_it_shuts_down(tmp_path: Path) -> None:
    settings = Settings(storage="memory", data_dir=tmp_path, memory_trim_seconds=5)
    built: list[Services] = []

    def factory() -> Services:
        services = build_services(settings)
        built.append(services)
        return services

    runtime.configure(factory)
    try:
        current = runtime.runtime()
        returner = current.services._memory
        assert returner is not None and returner.running
    finally:
        runtime.configure(None)
    assert built and built[0]._memory is None  # stopped with the services
