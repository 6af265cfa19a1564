"""Runs one receiver per enabled receiver trigger of the workspace.

Reconciles on start, on ``wake()`` (workspace reloaded) and when a receiver ends: a new
or re-enabled trigger is started, a removed, disabled or changed one stopped (and a
changed one started again with its new settings), and one that crashed or could not
start is restarted after ``initial × 2^(n−1)`` seconds, capped. In-process state only:
the durable part (checkpoint, broker offsets) belongs to each receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from headwater.dispatch.dispatcher import Dispatcher
from headwater.errors import MissingClientError, SourcePositionLostError
from headwater.store.base import Store
from headwater.triggers.owner import ServesAll, TriggerOwner
from headwater.triggers.receivers import (
    EventReceiver,
    ReceiverContext,
    ReceiverFactory,
    create_receiver,
    is_receiver_trigger,
    receiver_key,
)
from headwater.workspace.models import Workspace
from headwater.workspace.secret_refs import seal
from headwater.workspace.secret_tree import secret_scope
from headwater.workspace.templating import TemplateEngine

__all__ = ["ReceiverManager"]

log = structlog.get_logger(__name__)

_START_TIMEOUT_SECS = 30.0
_HEALTHY_SECS = 60.0  # a receiver that ran this long resets its failure count
# A lag reading asks the broker; a status read (``headwater triggers``, /metrics, a test
# waiting for "running") must answer even when that question hangs (a client library
# retrying a dead connection: botocore waits 3 × 60 s). Past this, the lag is unknown.
_LAG_TIMEOUT_SECS = 5.0


@dataclass
class _Slot:
    name: str
    config: str
    receiver: EventReceiver | None = None
    watcher: asyncio.Task[None] | None = None
    phase: str = "starting"  # running | backoff | failed | stopped
    failures: int = 0
    next_start: float = 0.0  # monotonic
    started_at: float | None = None
    restarts: int = 0
    last_error: str | None = None
    describe: dict[str, Any] = field(default_factory=dict)


class ReceiverManager:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        workspace: Callable[[], Workspace],
        templates: TemplateEngine,
        secrets: Callable[[], Mapping[str, str]],
        *,
        factory: ReceiverFactory = create_receiver,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        owner: TriggerOwner | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._on_error = on_error  # told the trigger name of each failure (metrics)
        self._dispatcher = dispatcher
        self._workspace = workspace
        self._templates = templates
        self._secrets = secrets
        self._factory = factory
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._slots: dict[str, _Slot] = {}
        self._wake = asyncio.Event()
        # Several servers: a receiver runs on the one server holding its trigger's lease.
        self._owner: TriggerOwner = owner or ServesAll()

    def wake(self) -> None:
        """Reconcile now (workspace reloaded, a receiver ended)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                try:
                    delay = await self.reconcile()
                except Exception:
                    log.exception("receivers_reconcile_failed")
                    delay = 5.0
                wake = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait([wake, stop_wait], timeout=delay, return_when="FIRST_COMPLETED")
                self._wake.clear()
                wake.cancel()
        finally:
            stop_wait.cancel()
            await asyncio.gather(*(self._stop(s) for s in self._slots.values()))
            self._slots.clear()

    async def reconcile(self) -> float:
        """Bring receivers to the workspace; returns seconds until a restart is due."""
        ws = self._workspace()
        wanted = {
            name: t
            for name, t in ws.triggers.items()
            if is_receiver_trigger(t) and t.enabled and self._owner.owns(name)
        }
        for name in list(self._slots):
            slot = self._slots[name]
            trigger = wanted.get(name)
            if trigger is None or _config_hash(trigger) != slot.config:
                await self._stop(slot)
                del self._slots[name]
                log.info(
                    "receiver_removed" if trigger is None else "receiver_reconfigured", trigger=name
                )
        now = time.monotonic()
        next_due = 30.0
        for name, trigger in wanted.items():
            slot = self._slots.setdefault(name, _Slot(name, _config_hash(trigger)))
            if slot.watcher is not None and slot.watcher.done():
                await self._on_exit(slot, now)
            if slot.receiver is None:
                if slot.next_start <= now:
                    await self._start(ws, name, trigger, slot)
                if slot.receiver is None:
                    next_due = min(next_due, max(0.0, slot.next_start - now))
        return next_due

    async def _start(self, ws: Workspace, name: str, trigger: Any, slot: _Slot) -> None:
        secrets = dict(self._secrets())
        secret_ctx = secret_scope(secrets)

        def render(value: Any, where: str) -> Any:
            return self._templates.render(value, secret_ctx, where=f"trigger {name!r} {where}")

        receiver: EventReceiver | None = None
        try:
            defaults = render(trigger.input, "input")
            receiver = self._factory(trigger, render, self._templates)
            ctx = ReceiverContext(
                store=self._store,
                dispatcher=self._dispatcher,
                workspace=ws.name,
                trigger=name,
                trigger_type=trigger.type,
                target_task=trigger.target_task,
                # Secret values become references the worker fills in: never stored.
                defaults=(
                    seal(defaults, secrets, receiver_key(ws.name, name))
                    if isinstance(defaults, Mapping)
                    else {}
                ),
                max_in_flight=trigger.max_in_flight,
            )
            await asyncio.wait_for(receiver.start(ctx), _START_TIMEOUT_SECS)
        except (MissingClientError, SourcePositionLostError) as exc:
            # Installing the package needs a restart anyway, and a lost source position
            # stays lost: no backoff loop, one error (a changed trigger starts again).
            self._halt(slot, f"start failed: {exc}")
            return
        except Exception as exc:
            if receiver is not None:
                with contextlib.suppress(Exception):
                    await receiver.stop()
            self._failed(slot, f"start failed: {exc}", time.monotonic())
            return
        slot.receiver = receiver
        slot.phase = "running"
        slot.started_at = time.monotonic()
        slot.describe = receiver.describe()
        slot.watcher = asyncio.create_task(self._watch(receiver), name=f"receiver-watch:{name}")

    async def _watch(self, receiver: EventReceiver) -> None:
        try:
            await receiver.wait()
        finally:
            self.wake()  # reconcile sees the ended receiver and schedules its restart

    async def _on_exit(self, slot: _Slot, now: float) -> None:
        watcher, slot.watcher = slot.watcher, None
        assert watcher is not None
        exc = watcher.exception() if not watcher.cancelled() else None
        receiver, slot.receiver = slot.receiver, None
        if receiver is not None:
            # It already ended; stop() only closes its connections.
            with contextlib.suppress(Exception):
                await receiver.stop()
        if isinstance(exc, SourcePositionLostError):
            self._halt(slot, f"crashed: {exc}")
            return
        if slot.started_at is not None and now - slot.started_at >= _HEALTHY_SECS:
            slot.failures = 0
        self._failed(slot, f"crashed: {exc!r}" if exc else "ended on its own", now)

    def _halt(self, slot: _Slot, reason: str) -> None:
        slot.phase = "failed"
        slot.next_start = math.inf
        slot.last_error = reason
        log.error("receiver_halted", trigger=slot.name, reason=reason)
        if self._on_error is not None:
            self._on_error(slot.name)

    def _failed(self, slot: _Slot, reason: str, now: float) -> None:
        slot.failures += 1
        slot.restarts += 1
        delay = min(self._backoff_max, self._backoff_initial * 2 ** (slot.failures - 1))
        slot.phase = "backoff"
        slot.next_start = now + delay
        slot.last_error = reason
        log.warning("receiver_backoff", trigger=slot.name, reason=reason, delay=delay)
        if self._on_error is not None:
            self._on_error(slot.name)

    async def _stop(self, slot: _Slot) -> None:
        receiver, slot.receiver = slot.receiver, None
        if receiver is not None:
            with contextlib.suppress(Exception):
                await receiver.stop()
        if slot.watcher is not None:
            with contextlib.suppress(BaseException):
                await slot.watcher
            slot.watcher = None
        slot.phase = "stopped"

    async def states(self) -> dict[str, dict[str, Any]]:
        """Per trigger name: state, restarts, last error, lag (events, ms) if known."""
        ws = self._workspace()
        result: dict[str, dict[str, Any]] = {}
        for name, trigger in ws.triggers.items():
            if not is_receiver_trigger(trigger):
                continue
            slot = self._slots.get(name)
            source_id = receiver_key(ws.name, name)
            state: dict[str, Any] = {
                "type": trigger.type,
                "state": slot.phase if slot else ("starting" if trigger.enabled else "disabled"),
                "restarts": slot.restarts if slot else 0,
                "last_error": slot.last_error if slot else None,
                "receiver": slot.describe if slot else {},
                "lag_events": None,
                "lag_pending": None,
                "lag_ms": None,
                "lag_bytes": None,
                "in_flight": await self._store.count_in_flight(source_id),
                "max_in_flight": trigger.max_in_flight,
                "events_accepted": await self._store.count_source(source_id),
                "events_rejected": await self._store.count_rejected(source_id),
            }
            if slot is not None and slot.receiver is not None:
                with contextlib.suppress(Exception):
                    lag = await asyncio.wait_for(slot.receiver.lag(), _LAG_TIMEOUT_SECS)
                    if lag is not None:
                        state.update(
                            lag_events=lag.events,
                            lag_pending=lag.pending,
                            lag_ms=lag.ms,
                            lag_bytes=lag.bytes,
                        )
            result[name] = state
        return result


def _config_hash(trigger: Any) -> str:
    text = json.dumps(trigger.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
