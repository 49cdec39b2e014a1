"""Memory freed after a burst goes back to the system (lrs.memory), on glibc."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from lrs import memory
from lrs.config import Settings
from lrs.services import build_services

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not memory.can_return_memory(),
    reason="malloc_trim is glibc's",
)


def _anonymous_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@glibc_only
def test_free_memory_between_blocks_still_in_use_is_returned() -> None:
    # 64 MiB in blocks of 64 KiB (below glibc's mmap threshold: they come from the heap), then
    # every block freed but one in eight, the last one included: the free memory lies between
    # blocks in use, where glibc's own trimming of a heap's top never reaches.
    blocks = [bytearray(b"x" * (64 * 1024)) for _ in range(1024)]
    kept = blocks[7::8]
    del blocks
    before = _anonymous_kib()
    memory.return_free_memory()
    after = _anonymous_kib()
    assert before - after > 20 * 1024, (before, after)
    assert all(len(block) == 64 * 1024 for block in kept)


def test_no_returner_when_switched_off() -> None:
    assert memory.memory_returner(0) is None


@glibc_only
def test_the_api_process_returns_memory_until_it_closes(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        settings = Settings(storage="memory", data_dir=tmp_path, memory_trim_seconds=5)
        services = build_services(settings)
        await services.start()
        running = services._memory is not None and services._memory.running
        await services.close()
        stopped = services._memory is None
        off = build_services(settings.model_copy(update={"memory_trim_seconds": 0}))
        await off.start()
        none_when_off = off._memory is None
        await off.close()
        return running, stopped, none_when_off

    assert asyncio.run(scenario()) == (True, True, True)
