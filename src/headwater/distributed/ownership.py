"""Trigger ownership across servers: one lease row per trigger, with a fencing token.

Every ``check_interval`` a server lists the leases of its workspace (one query), renews
the ones it holds when a third of their time is used, and takes the ones that are free
or expired. A server killed with SIGKILL stops renewing: its leases expire after
``ttl`` and another server takes them at its next check, so failover takes at most
``ttl + check_interval`` (6 s + 1 s by default). A server stops acting as an owner as
soon as it cannot confirm its lease (``owns`` turns False at ``ttl`` minus a margin
after the last successful renewal, measured on its own monotonic clock), before anybody
else can hold the lease. A clean shutdown releases its leases at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from headwater.store.base import Lease, Store
from headwater.triggers.receivers import is_receiver_trigger
from headwater.workspace.models import EventSourceTrigger, SchedulerTrigger, Workspace

__all__ = ["TriggerOwnership", "lease_name", "server_owner_id"]

log = structlog.get_logger(__name__)

_PREFIX = "trigger:"
_JANITOR = "janitor:"


def server_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def lease_name(workspace: str, trigger: str) -> str:
    return f"{_PREFIX}{workspace}/{trigger}"


@dataclass(slots=True)
class _Held:
    token: int
    valid_until: float  # monotonic: stop acting as owner after this
    renewed_at: float  # monotonic


class TriggerOwnership:
    """Implements ``headwater.triggers.owner.TriggerOwner`` with leases in the store."""

    def __init__(
        self,
        store: Store,
        workspace: Callable[[], Workspace],
        *,
        owner: str | None = None,
        ttl: float = 6.0,
        check_interval: float = 1.0,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._workspace = workspace
        self.owner = owner or server_owner_id()
        self._ttl = ttl
        self._check = check_interval
        self._margin = min(1.0, ttl / 4)
        self.on_change = on_change  # called when the set of held leases changes
        self._held: dict[str, _Held] = {}
        self._taken_over: set[str] = set()

    # -- TriggerOwner ------------------------------------------------------------------
    def owns(self, trigger: str) -> bool:
        return self._valid(lease_name(self._workspace().name, trigger))

    def is_janitor(self) -> bool:
        return self._valid(_JANITOR + self._workspace().name)

    def took_over(self, trigger: str) -> bool:
        name = lease_name(self._workspace().name, trigger)
        if name in self._taken_over:
            self._taken_over.discard(name)
            return True
        return False

    def _valid(self, name: str) -> bool:
        held = self._held.get(name)
        return held is not None and held.valid_until > time.monotonic()

    def held(self) -> dict[str, int]:
        """Lease name -> fencing token, of the leases this server holds now."""
        return {n: h.token for n, h in self._held.items() if self._valid(n)}

    # -- loop --------------------------------------------------------------------------
    def wanted(self, ws: Workspace) -> set[str]:
        names = {_JANITOR + ws.name}
        for name, trigger in ws.triggers.items():
            if isinstance(trigger, EventSourceTrigger | SchedulerTrigger) or is_receiver_trigger(
                trigger
            ):
                names.add(lease_name(ws.name, name))
        return names

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.check()
                except Exception as exc:
                    log.warning("ownership_check_failed", error=repr(exc))
                    self._expire_unconfirmed()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._check)
        finally:
            await self.release_all()

    async def check(self) -> None:
        """One round: renew what is held, take what is free, drop what was lost."""
        ws = self._workspace()
        wanted = self.wanted(ws)
        found: dict[str, Lease] = {}
        for prefix in (f"{_PREFIX}{ws.name}/", _JANITOR + ws.name):
            found.update({le.name: le for le in await self._store.list_leases(prefix)})
        now_wall = datetime.now(UTC)
        changed = False
        for name in list(self._held):
            if name not in wanted:  # the trigger left the workspace
                gone = self._held.pop(name)
                await self._store.release_lease(name, self.owner, gone.token)
                changed = True
        for name in sorted(wanted):
            lease = found.get(name)
            held = self._held.get(name)
            if held is not None:
                if lease is None or lease.owner != self.owner or lease.token != held.token:
                    log.warning("trigger_lease_lost", lease=name, token=held.token)
                    del self._held[name]
                    changed = True
                elif time.monotonic() - held.renewed_at >= self._ttl / 3:
                    changed |= await self._renew(name, held)
            elif lease is None or lease.expires_at <= now_wall or lease.owner == self.owner:
                changed |= await self._acquire(name, lease)
        self._expire_unconfirmed()
        if changed:
            self.on_change()

    async def _renew(self, name: str, held: _Held) -> bool:
        started = time.monotonic()
        if await self._store.renew_lease(name, self.owner, held.token, self._ttl):
            held.renewed_at = started
            held.valid_until = started + self._ttl - self._margin
            return False
        log.warning("trigger_lease_lost", lease=name, token=held.token)
        del self._held[name]
        return True

    async def _acquire(self, name: str, previous: Lease | None) -> bool:
        started = time.monotonic()
        lease = await self._store.acquire_lease(name, self.owner, self._ttl)
        if lease is None:
            return False
        self._held[name] = _Held(lease.token, started + self._ttl - self._margin, started)
        if previous is not None and previous.owner != self.owner:
            self._taken_over.add(name)
            log.info(
                "trigger_lease_taken_over",
                lease=name,
                token=lease.token,
                previous_owner=previous.owner,
            )
        else:
            log.info("trigger_lease_acquired", lease=name, token=lease.token)
        return True

    def _expire_unconfirmed(self) -> None:
        now = time.monotonic()
        gone = [n for n, h in self._held.items() if h.valid_until <= now]
        for name in gone:
            log.warning("trigger_lease_unconfirmed", lease=name)
            del self._held[name]
        if gone:
            self.on_change()

    async def release_all(self) -> None:
        held, self._held = self._held, {}
        for name, h in held.items():
            with contextlib.suppress(Exception):
                await self._store.release_lease(name, self.owner, h.token)
        if held:
            log.info("trigger_leases_released", count=len(held))
