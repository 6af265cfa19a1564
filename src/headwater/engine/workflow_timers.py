"""The wake-up loop of waiting workflows: puts a let-go workflow back in the queue when
its sleep is over, or the message, event or child it waits for has come
(``Store.wake_workflows``). Every node with a worker runs one; two waking the same job
is harmless (the wake is a conditional update)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog

from headwater.store.roles import WorkflowStore

__all__ = ["POLL", "run_workflow_timers"]

log = structlog.get_logger(__name__)

# At most this long between two looks: a wait noted by another process, or a message
# that came while its workflow was being let go, is seen within it.
POLL = 0.25


async def run_workflow_timers(store: WorkflowStore, stop: asyncio.Event) -> None:
    while not stop.is_set():
        delay = POLL
        try:
            now = datetime.now(UTC)
            await store.wake_workflows(now)
            due = await store.next_workflow_wake()
            if due is not None:
                delay = min(POLL, max(0.0, (due - datetime.now(UTC)).total_seconds()))
        except Exception:
            log.exception("workflow_timers_failed")
            delay = 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
