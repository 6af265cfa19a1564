"""The wake-up loop of waiting workflows: puts a let-go workflow back in the queue when
its sleep is over, or the message, event or child it waits for has come
(``Store.wake_workflows``). Every node with a worker runs one; two waking the same job
is harmless (the wake is a conditional update)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from headwater.store.roles import WorkflowStore

__all__ = ["POLL", "run_workflow_timers"]

log = structlog.get_logger(__name__)

# At most this long between two looks: a wait noted by another process, or a message
# that came while its workflow was being let go, is seen within it.
POLL = 0.25


async def run_workflow_timers(
    store: WorkflowStore, stop: asyncio.Event, on_woken: Callable[[], None] | None = None
) -> None:
    """``on_woken``: told when jobs went back to the queue (the local worker looks for
    work at once, not only on the store's wake-up, which another process may miss)."""
    while not stop.is_set():
        delay = POLL
        try:
            now = datetime.now(UTC)
            if await store.wake_workflows(now) and on_woken is not None:
                on_woken()
            due = await store.next_workflow_wake()
            if due is not None:
                delay = min(POLL, max(0.0, (due - datetime.now(UTC)).total_seconds()))
        except Exception:
            log.exception("workflow_timers_failed")
            delay = 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
