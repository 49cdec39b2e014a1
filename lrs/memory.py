"""Handing freed memory back to the operating system after a burst.

Under load SQLite's page caches and the requests' and derivation rounds' objects take memory
from the C allocator, and give it back when the burst is over. glibc's allocator keeps what
was freed for later instead of returning it: freed page-cache pages lie between blocks still
in use, and only the free memory at the very top of a heap is ever returned by itself. After a
50,000-statement burst (`python -m bench discovered`) an idle API process held about 100 MiB
of such free memory. `malloc_trim` returns every wholly free page of every heap; it takes a
few milliseconds, so it runs on a thread, every `LRS_MEMORY_TRIM_SECONDS`.

Elsewhere than on glibc (musl, macOS) there is nothing to call, and nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import cache

from lrs.periodic import Periodic

log = logging.getLogger("lrs.memory")


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def can_return_memory() -> bool:
    """Whether this process's allocator can be asked to return free memory (glibc)."""
    return _malloc_trim() is not None


def return_free_memory() -> bool:
    """Return the allocator's wholly free pages to the operating system; whether any were.
    Safe from any thread (glibc locks each heap while it trims it)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def memory_returner(every_seconds: float) -> Periodic | None:
    """A background task returning free memory every so many seconds (None: not on this
    platform, or switched off with 0)."""
    if every_seconds <= 0 or not can_return_memory():
        return None

    async def step() -> None:
        await asyncio.to_thread(return_free_memory)

    return Periodic(step, every_seconds, log, "returning free memory")
