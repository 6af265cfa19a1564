"""Paused triggers (``headwater pause trigger NAME``), as every server sees them.

The flag lives in the store (``paused_triggers``), so it survives restarts and holds for
every server. Each node reads it every ``interval`` seconds (one small query) and when
the set changes wakes its trigger managers, which stop a paused trigger's source (a
receiver stops reading, so messages stay in the broker; an event source's consumer is
stopped, its cursor kept; a cron trigger fires no ticks) and start it again on resume.
The node that served the pause request refreshes at once; the others within
``interval``. A webhook answers 503 with ``Retry-After`` while its trigger is paused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from headwater.core.status import PauseKind
from headwater.errors import NotFoundError
from headwater.store.roles import FlowStore
from headwater.workspace.hooks import find_task
from headwater.workspace.models import Workspace
from headwater.workspace.multi import resolve_task_name

__all__ = ["PAUSE_POLL_SECS", "PausedTriggers", "set_paused"]

log = structlog.get_logger(__name__)

PAUSE_POLL_SECS = 1.0


class PausedTriggers:
    """The names of the paused triggers, refreshed from the store."""

    def __init__(self, store: FlowStore, *, interval: float = PAUSE_POLL_SECS) -> None:
        self._store = store
        self._interval = interval
        self._names: frozenset[str] = frozenset()
        self._listeners: list[Callable[[], None]] = []

    def __call__(self, name: str) -> bool:
        """Whether the trigger ``name`` is paused (as of the last refresh)."""
        return name in self._names

    @property
    def names(self) -> frozenset[str]:
        return self._names

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (a manager's ``wake``) whenever the set changes."""
        self._listeners.append(listener)

    async def refresh(self) -> bool:
        """Read the set from the store; whether it changed (listeners were woken)."""
        found = frozenset(p.name for p in await self._store.list_paused(PauseKind.TRIGGER))
        if found == self._names:
            return False
        log.info(
            "triggers_pause_changed",
            paused=sorted(found - self._names),
            resumed=sorted(self._names - found),
        )
        self._names = found
        for listener in self._listeners:
            listener()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every ``interval`` until ``stop``; a failing store is retried."""
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # the store is down: keep the last known set
                log.warning("triggers_pause_refresh_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)


async def set_paused(
    store: FlowStore,
    ws: Workspace,
    kind: PauseKind,
    name: str,
    paused: bool,
    triggers: PausedTriggers | None = None,
) -> dict[str, Any]:
    """Pause or resume the task or trigger ``name`` of ``ws`` (NotFoundError when it has
    none); ``triggers``: this node's view, refreshed at once. What the API answers."""
    kind = PauseKind(kind)
    if kind is PauseKind.TASK:
        name = resolve_task_name(ws, name)
        if find_task(ws, name) is None:
            raise NotFoundError(f"no task named {name!r} in workspace {ws.name!r}")
    elif name not in ws.triggers:
        raise NotFoundError(f"no trigger named {name!r} in workspace {ws.name!r}")
    changed = await store.set_paused(kind, name, paused)
    if kind is PauseKind.TRIGGER and triggers is not None:
        await triggers.refresh()
    return {"kind": kind.value, "name": name, "paused": paused, "changed": changed}
