"""Sync function steps get a thread each, up to the worker's concurrency: none waits for
another to end (a sync workflow holds its thread while it waits for its records)."""

from __future__ import annotations

import asyncio
import threading

from headwater.engine.functions import FunctionCache

SLOTS = 12  # more than the loop's default executor has on a small machine (cpu + 4)


async def test_as_many_sync_functions_run_at_once_as_the_worker_has_slots() -> None:
    barrier = threading.Barrier(SLOTS, timeout=10)

    def meet() -> int:
        return barrier.wait()  # returns only once all SLOTS calls are running at once

    cache = FunctionCache({"app:meet": meet}, threads=SLOTS)
    outcomes = await asyncio.gather(
        *(cache.call("app:meet", {}, 20.0, asyncio.Event()) for _ in range(SLOTS))
    )
    assert [o.error for o in outcomes] == [None] * SLOTS
    assert sorted(o.value for o in outcomes) == list(range(SLOTS))
