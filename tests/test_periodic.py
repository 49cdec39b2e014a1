"""The periodic loop of the outbox and federation sweeps (lrs.periodic)."""

from __future__ import annotations

import asyncio
import logging

from lrs.periodic import Periodic


async def test_stop_ends_a_loop_whose_step_swallowed_the_cancellation() -> None:
    """Python 3.11's wait_for can swallow a cancellation that races with its timeout: the step
    then returns (or times out) as if nothing happened. Stopping must still end the loop (a
    shutdown once waited for it for ever)."""
    steps = 0

    async def step() -> None:
        nonlocal steps
        steps += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return  # swallowed, as the racing wait_for does

    periodic = Periodic(step, 0.0, logging.getLogger("test"), "test step")
    periodic.start()
    await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(periodic.stop())
    done, _ = await asyncio.wait({stopping}, timeout=10)  # a hang guard, not a timing test
    assert done, f"the loop went on after stop() ({steps} steps)"
    assert steps == 1


async def test_a_failing_step_is_tried_again() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("broker away")

    periodic = Periodic(step, 0.001, logging.getLogger("test"), "test step")
    periodic.start()
    while calls < 3:
        await asyncio.sleep(0.005)
    await periodic.stop()
