"""Every receiver at its DEFAULT settings (block, poll, long-poll, restart backoff): idle
for longer than one read waits, then a message still becomes a job at once, and idling
logged no reconnect and no warning.

The other suites shorten these timings for speed; that hid the Redis receivers' idle bug
(their 5 s blocking read equalled redis-py's 5 s socket timeout, so every idle period was
a "network error" with a doubling reconnect delay). One store is enough here: what is
under test is the broker side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from headwater.store.base import Store
from tests.integration.receivers.conftest import TRIGGER, Rig
from tests.integration.receivers.harness import HARNESSES, ReceiverHarness

# SQS long-polls 20 s by default: its idle is the long one.
_SLOW = {"sqs"}

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.slow] if name in _SLOW else [])
        for name in sorted(HARNESSES)
    ]
)
async def default_rig(request: pytest.FixtureRequest, store: Store) -> AsyncIterator[Rig]:
    harness: ReceiverHarness = HARNESSES[request.param]()
    await harness.setup()
    trigger = {k: v for k, v in harness.trigger().items() if k not in harness.shortened}
    rig = Rig(store, harness, trigger)
    yield rig
    await rig.halt()
    await harness.cleanup()


def _complaints(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e
        for e in logs
        if e.get("log_level") in ("warning", "error", "critical")
        or "reconnect" in str(e.get("event"))
    ]


async def _latency_of_next_job(rig: Rig, n: int, give_up: float) -> float:
    started = time.monotonic()
    await rig.harness.publish([{"n": n}])
    await rig.wait_jobs(n + 1, timeout=give_up)
    return time.monotonic() - started


async def test_idle_past_one_read_then_the_next_message_is_a_job_at_once(
    default_rig: Rig,
) -> None:
    rig = default_rig
    wait = rig.harness.default_wait_secs
    for key in rig.harness.shortened:
        assert key not in rig.trigger  # the receiver runs with its own default
    with capture_logs() as logs:
        manager = await rig.start(default_backoff=True)
        await _latency_of_next_job(rig, 0, give_up=wait + 30)  # connected and consuming
        # Idle: the condition under test, not a wait for a result.
        await asyncio.sleep(wait + 1.0)
        latency = await _latency_of_next_job(rig, 1, give_up=wait + 30)
        state = (await manager.states())[TRIGGER]
    assert _complaints(logs) == [], "idling logged a warning or a reconnect"
    assert state["state"] == "running"
    assert state["restarts"] == 0
    # Every broker here hands a waiting reader a new message at once (the long poll ends
    # early): the job comes in milliseconds. Half a read's wait is loose enough for a
    # loaded 2-core machine and far below what a reconnect-with-backoff costs.
    # A receiver that polls (no wake-up from the source) says how long it may take.
    bound = getattr(rig.harness, "max_latency_secs", max(wait / 2, 1.0))
    assert latency < bound, f"{latency:.2f}s to a job after idling {wait + 1.0:.0f}s"
