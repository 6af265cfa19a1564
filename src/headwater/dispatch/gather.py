"""Debounce and batch: the events of such a trigger are buffered, then flushed as ONE job.

``Gatherer`` is the Dispatcher's half: it knows which triggers gather (their source id,
``{workspace}/{trigger}``, is what every trigger kind stamps on its events: webhooks,
event sources, receivers and the SDK's), renders each event's key from its input and
buffers the events in the store, in one transaction with the event source's cursor,
before the source is told (and acknowledges). ``Flusher`` turns due buffers into jobs:
the store claims them, so several servers flush each buffer once, and the due times are
stored, so a restart keeps them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from headwater import jsonsafe
from headwater.core.gather import (
    BufferedEvent,
    BufferOutcome,
    FlushedBuffer,
    GatherKind,
    GatherRule,
)
from headwater.core.records import NewJob
from headwater.errors import HeadwaterError, first_line
from headwater.store.errors import DATABASE_ERRORS
from headwater.store.roles import GatherStore
from headwater.workspace.flow import MAX_KEY_CHARS, Batch, Debounce
from headwater.workspace.models import Workspace
from headwater.workspace.templating import TemplateEngine

__all__ = ["Flusher", "GatherPlan", "Gathered", "Gatherer", "gather_plans"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class GatherPlan:
    """A gathering trigger: its rule and key template (None: one key for all events)."""

    rule: GatherRule
    key: str | None
    trigger: str


def gather_plans(ws: Workspace) -> dict[str, GatherPlan]:
    """Source id → plan, for the enabled triggers with ``debounce`` or ``batch``."""
    plans: dict[str, GatherPlan] = {}
    for name, trigger in ws.triggers.items():
        debounce = getattr(trigger, "debounce", None)
        batch = getattr(trigger, "batch", None)
        rule: GatherRule
        if isinstance(debounce, Debounce):
            rule = GatherRule(GatherKind.DEBOUNCE, debounce.period, debounce.max_wait)
            key = debounce.key
        elif isinstance(batch, Batch):
            rule = GatherRule(GatherKind.BATCH, batch.window, None, batch.size)
            key = batch.key
        else:
            continue
        plans[f"{ws.name}/{name}"] = GatherPlan(rule, key, name)
    return plans


@dataclass(slots=True)
class Gathered:
    """The jobs of a batch that gathering triggers take: ``slots`` (indexes into the
    batch's jobs), each with its outcome once stored or, as a string, why it is refused
    (stored as a rejected event)."""

    slots: list[int]
    outcomes: list[BufferOutcome | str]
    events: list[BufferedEvent]
    all_jobs: bool  # every job of the batch is gathered

    @property
    def refused(self) -> list[tuple[int, str]]:
        return [
            (s, o) for s, o in zip(self.slots, self.outcomes, strict=True) if isinstance(o, str)
        ]


class Gatherer:
    def __init__(self, store: GatherStore, templates: TemplateEngine | None = None) -> None:
        self._store = store
        self._templates = templates or TemplateEngine()
        self._plans_of: Workspace | None = None
        self._plans: dict[str, GatherPlan] = {}
        # Told after events were buffered: the flusher of this process looks at its
        # timer again (another process's flusher finds them by polling).
        self.on_buffered: Callable[[], None] | None = None

    def plans(self, ws: Workspace) -> Mapping[str, GatherPlan]:
        if ws is not self._plans_of:  # reloaded: a new workspace object
            self._plans_of, self._plans = ws, gather_plans(ws)
        return self._plans

    def key(self, plan: GatherPlan, job: NewJob) -> str:
        """The event's key, rendered from its input; raises HeadwaterError / ValueError."""
        if plan.key is None:
            return ""
        where = f"trigger {plan.trigger!r} {plan.rule.kind.value} key"
        key = self._templates.render_str(plan.key, {"input": job.input}, where=where)
        if len(key) > MAX_KEY_CHARS:
            raise ValueError(f"the {where} has {len(key)} characters (at most {MAX_KEY_CHARS})")
        return key

    def take(self, ws: Workspace, jobs: Sequence[NewJob]) -> Gathered | None:
        """The jobs of gathering triggers, keyed (None: there are none)."""
        plans = self.plans(ws)
        if not plans:
            return None
        found = Gathered([], [], [], all_jobs=False)
        for i, job in enumerate(jobs):
            plan = plans.get(job.source_id or "")
            if plan is None:
                continue
            found.slots.append(i)
            try:
                found.events.append(BufferedEvent(plan.rule, self.key(plan, job), job))
                found.outcomes.append(BufferOutcome(True))
            except (HeadwaterError, ValueError) as exc:
                found.outcomes.append(f"cannot gather this event: {exc}")
        if not found.slots:
            return None
        found.all_jobs = len(found.slots) == len(jobs)
        return found

    async def store(
        self, found: Gathered, cursor: tuple[str, str] | None
    ) -> tuple[str, str] | None:
        """Buffer what ``take`` found (with ``cursor``), filling in the outcomes; returns
        the cursor when it was not stored (an event the store cannot keep: the others
        are buffered one by one, the bad one refused, and the caller stores the cursor
        after the rejected events)."""
        results: list[BufferOutcome | str]
        try:
            results = list(await self._store.buffer_events(found.events, cursor))
            cursor = None
        except Exception as exc:
            if not jsonsafe.is_data_error(exc):
                raise
            results = []
            for event in found.events:
                try:
                    results += await self._store.buffer_events([event])
                except Exception as one:
                    if not jsonsafe.is_data_error(one):
                        raise
                    results.append(f"the store cannot keep this event: {first_line(one)}")
        it = iter(results)
        found.outcomes = [o if isinstance(o, str) else next(it) for o in found.outcomes]
        if self.on_buffered is not None and any(
            isinstance(o, BufferOutcome) and o.buffered for o in found.outcomes
        ):
            self.on_buffered()
        return cursor


class Flusher:
    """Flushes due buffers into jobs until stopped; sleeps until the next due time (at
    most ``poll`` seconds: buffers of other servers are found by polling)."""

    def __init__(
        self,
        store: GatherStore,
        *,
        poll: float = 0.5,
        limit: int = 100,
    ) -> None:
        self._store = store
        self._poll = poll
        self._limit = limit
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def flush_once(self) -> list[FlushedBuffer]:
        flushed = await self._store.flush_buffers(datetime.now(UTC), self._limit)
        for f in flushed:
            log.info(
                "events_gathered", job_id=f.job_id, trigger=f.source_id, key=f.key, events=f.events
            )
        return flushed

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            try:
                flushed = await self.flush_once()
                if len(flushed) >= self._limit:
                    continue  # more are due now
                delay = self._poll
                due = await self._store.next_buffer_due()
                if due is not None:
                    delay = min(delay, max(0.0, (due - datetime.now(UTC)).total_seconds()))
                if not flushed:  # due but not taken: another server's flush holds it
                    delay = max(delay, 0.02)
                failures = 0
            except Exception as exc:  # the buffers wait in the store: try again later
                failures += 1
                delay = min(30.0, self._poll * 2**failures)
                if isinstance(exc, DATABASE_ERRORS):  # the store is away
                    log.warning("gather_flush_failed", error=first_line(exc), retry_in=delay)
                else:
                    log.exception("gather_flush_failed", retry_in=delay)
            await _wait_any(stop, self._wake, delay)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    if timeout <= 0:
        await asyncio.sleep(0)
        return
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for w in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await w
