"""The rate limiter's wake-ups (``store.flow.WakeTimer``): every full window that will
free a start gets its wake-up, not only the earliest one asked for."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from headwater.store.flow import WakeTimer
from headwater.store.ids import utcnow


async def test_each_due_time_gets_its_wake_up() -> None:
    fired: list[float] = []
    timer = WakeTimer(lambda channel, payload: fired.append(time.monotonic()))
    t0, now = time.monotonic(), utcnow()
    timer.wake_at(now + timedelta(seconds=0.1))
    timer.wake_at(now + timedelta(seconds=0.2))  # later: kept behind the first
    timer.wake_at(now + timedelta(seconds=0.05))  # earlier: armed first
    timer.wake_at(now + timedelta(seconds=0.1005))  # within 1 ms of one kept: shares it
    await asyncio.sleep(0.3)
    assert len(fired) == 3, fired
    # never early (a wake-up before the window slid would find it still full)
    assert [t - t0 >= due for t, due in zip(fired, (0.05, 0.1, 0.2), strict=True)] == [True] * 3
    timer.wake_at(utcnow() + timedelta(seconds=0.05))
    timer.cancel()
    await asyncio.sleep(0.1)
    assert len(fired) == 3  # cancelled: nothing more
