"""The cron scheduler: one job per tick of every enabled ``scheduler`` trigger.

Exactly once, also across restarts and with several headwater processes: every tick is an
``Event`` whose dedup key names the trigger and the tick's scheduled time
(``scheduler:{workspace}/{trigger}:{2025-01-02T03:04:05Z}``), so two processes firing the
same tick create one job, and re-firing a tick after a crash is harmless.

Timing: the loop sleeps until the next tick of any trigger (computed, no fixed polling),
at most ``max_sleep`` seconds so that a workspace reload is noticed without ``wake()``.

Missed ticks (headwater was down, or the store was): skipped, except that a tick late by
at most ``tolerance`` seconds (a busy process) still fires. With ``catch_up: true`` they
are made up instead. The "point in time before which all ticks are known to have been
fired" (DBOS' checkpoint) needs no table of its own: it is the newest scheduled time in
the dedup keys of the trigger's jobs (and rejected events), read once at start-up.

A trigger's ``input`` is rendered per tick with ``secret``/``secrets`` and ``schedule``:
``{{ schedule.time }}`` (the tick, ISO 8601 UTC), ``{{ schedule.local_time }}`` (in the
trigger's zone) and ``{{ schedule.trigger }}``; it becomes the event's defaults.

``concurrency: skip | cancel_previous`` (Strøm's) decides what a tick does while the
trigger's previous job still runs: see ``headwater.triggers.concurrency``.

Time zones and DST follow Vixie cron (see ``headwater.triggers.cron_schedule``): a tick in
a spring-forward gap fires at the gap's end (fixed hour) or not at all (``*`` hour); in a
repeated fall-back hour a fixed-hour tick fires once, a ``*``-hour tick in both passes.
"""

from __future__ import annotations

import asyncio
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from headwater.dispatch.dispatcher import DispatchOutcome, DispatchStatus, Event
from headwater.errors import TemplateError
from headwater.store.base import JobFilter, RejectedEvent
from headwater.triggers.concurrency import Admission, admit_ticks
from headwater.triggers.context import TriggerContext, refreshed_workspace, secret_context
from headwater.triggers.cron_schedule import CronSchedule
from headwater.triggers.owner import ServesAll, TriggerOwner
from headwater.workspace.models import SchedulerTrigger
from headwater.workspace.secret_refs import seal

__all__ = [
    "SOURCE_TYPE",
    "CronSchedule",
    "Scheduler",
    "TickResult",
    "parse_scheduled_time",
    "scheduler_dedup_key",
    "scheduler_source_id",
]

log = structlog.get_logger(__name__)

SOURCE_TYPE = "scheduler"
_LOOKBACK = 50  # recent jobs read to find the newest fired tick (ids are time-ordered)


def scheduler_source_id(workspace: str, trigger: str) -> str:
    return f"{workspace}/{trigger}"


def _iso(scheduled: datetime) -> str:
    return scheduled.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduler_dedup_key(workspace: str, trigger: str, scheduled: datetime) -> str:
    """``scheduler:{workspace}/{trigger}:{scheduled time, ISO 8601 UTC, seconds}``."""
    return f"{SOURCE_TYPE}:{scheduler_source_id(workspace, trigger)}:{_iso(scheduled)}"


def parse_scheduled_time(dedup_key: str | None, source_id: str) -> datetime | None:
    """The scheduled time a tick's dedup key carries (None for any other key)."""
    prefix = f"{SOURCE_TYPE}:{source_id}:"
    if dedup_key is None or not dedup_key.startswith(prefix):
        return None
    try:
        when = datetime.fromisoformat(dedup_key[len(prefix) :])
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo is not None else None


@dataclass(frozen=True, slots=True)
class TickResult:
    """One tick handed to the dispatcher (``outcome`` says what became of it)."""

    trigger: str
    scheduled: datetime
    outcome: DispatchOutcome


@dataclass(slots=True)
class _Entry:
    name: str
    trigger: SchedulerTrigger
    schedule: CronSchedule
    source_id: str
    workspace: str
    after: datetime  # every tick at or before this was fired (or skipped)
    next: datetime | None  # first tick after ``after``; None: the expression never matches
    late_from: datetime | None = None  # taken over: ticks after this fire even if late


class Scheduler:
    """Fires the ticks of the current workspace's scheduler triggers until stopped."""

    def __init__(
        self,
        ctx: TriggerContext,
        *,
        tolerance: float = 5.0,
        max_catch_up: int = 1000,
        max_sleep: float = 60.0,
        clock: Callable[[], datetime] | None = None,
        owner: TriggerOwner | None = None,
        takeover_window: float = 60.0,
        paused: Callable[[str], bool] | None = None,
    ) -> None:
        self._ctx = ctx
        # ``headwater pause trigger``: a paused trigger fires no ticks; on resume it
        # goes on from the next tick (the ticks of the pause are not made up).
        self._paused_of = paused or (lambda name: False)
        self._paused: set[str] = set()
        self._tolerance = timedelta(seconds=tolerance)
        self._max_catch_up = max_catch_up
        self._max_sleep = max_sleep
        self._clock = clock or _utcnow
        # Several servers: a trigger fires on the one server holding its lease; the new
        # holder after a failover fires the ticks of the gap (up to ``takeover_window``).
        self._owner: TriggerOwner = owner or ServesAll()
        self._takeover_window = timedelta(seconds=takeover_window)
        self._entries: dict[str, _Entry] = {}
        self._disabled: set[str] = set()
        self._broken: dict[str, tuple[str, str]] = {}  # name -> (cron, tz) already reported
        self._synced_once = False
        self._wake = asyncio.Event()

    # -- public ---------------------------------------------------------------------------
    def wake(self) -> None:
        """Re-read the workspace now (call after a reload) instead of within ``max_sleep``."""
        self._wake.set()

    def next_fire_times(self) -> dict[str, datetime | None]:
        """Next tick (UTC) of every scheduler trigger; None when disabled or never due."""
        times: dict[str, datetime | None] = dict.fromkeys(self._disabled)
        times.update(dict.fromkeys(self._broken))
        times.update(dict.fromkeys(self._paused))
        times.update({name: e.next for name, e in self._entries.items()})
        return times

    def trigger_states(self) -> dict[str, dict[str, Any]]:
        """Live state per scheduler trigger, for ``GET /api/triggers`` and ``headwater
        triggers``: ``state`` (scheduled | disabled | invalid | never_due) and
        ``next_fire_at`` (ISO 8601 UTC, or None)."""
        states: dict[str, dict[str, Any]] = {}
        for name in self._disabled:
            states[name] = {"state": "disabled", "next_fire_at": None}
        for name in self._broken:
            states[name] = {"state": "invalid", "next_fire_at": None}
        for name in self._paused:
            states[name] = {"state": "paused", "next_fire_at": None}
        for name, entry in self._entries.items():
            when = entry.next
            states[name] = {
                "state": "scheduled" if when is not None else "never_due",
                "next_fire_at": _iso(when) if when is not None else None,
            }
        return states

    async def run(self, stop: asyncio.Event) -> None:
        """Serve every enabled scheduler trigger until ``stop`` is set."""
        log.info("scheduler_started")
        failures = 0
        while not stop.is_set():
            try:
                await self.run_once()
                failures = 0
                delay = self._delay()
            except Exception as exc:
                # The store (or the workspace) failed: retry with backoff, never die. Due
                # ticks stay due; without catch_up they fall out of the tolerance.
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.error("scheduler_error", error=repr(exc), retry_in=delay, exc_info=exc)
            await self._sleep(stop, delay)
        log.info("scheduler_stopped")

    async def run_once(self, now: datetime | None = None) -> list[TickResult]:
        """One pass: pick up workspace changes, then fire every tick due at ``now``."""
        now = now or self._clock()
        await self._sync(now)
        return await self._fire_due(now)

    # -- workspace changes ------------------------------------------------------------------
    async def _sync(self, now: datetime) -> None:
        ws = self._ctx.workspace()
        wanted = {
            n: t
            for n, t in ws.triggers.items()
            if isinstance(t, SchedulerTrigger) and self._owner.owns(n)
        }
        self._disabled = {n for n, t in wanted.items() if not t.enabled}
        self._paused = {n for n, t in wanted.items() if t.enabled and self._paused_of(n)}
        for name in list(self._entries):
            trig = wanted.get(name)
            entry = self._entries[name]
            if (
                trig is None
                or not trig.enabled
                or name in self._paused
                or entry.workspace != ws.name
            ):
                del self._entries[name]
                log.info("scheduler_trigger_stopped", trigger=name)
        for name in list(self._broken):
            if name not in wanted or not wanted[name].enabled:
                del self._broken[name]
        for name, trig in wanted.items():
            if trig.enabled and name not in self._paused:
                await self._sync_one(ws.name, name, trig, now)
        # Catch-up reads the store only for the triggers of the first pass: a trigger
        # added or re-enabled later was not missed by downtime.
        self._synced_once = True

    async def _sync_one(
        self, ws_name: str, name: str, trig: SchedulerTrigger, now: datetime
    ) -> None:
        entry = self._entries.get(name)
        if entry is not None and (entry.schedule.expression, entry.schedule.timezone) == (
            trig.cron.strip(),
            trig.timezone,
        ):
            entry.trigger = trig  # input, task and catch_up apply from the next tick on
            return
        try:
            schedule = CronSchedule(trig.cron, trig.timezone)
        except ValueError as exc:
            if self._broken.get(name) != (trig.cron, trig.timezone):
                self._broken[name] = (trig.cron, trig.timezone)
                log.error("scheduler_invalid_trigger", trigger=name, error=str(exc))
            self._entries.pop(name, None)
            return
        self._broken.pop(name, None)
        source_id = scheduler_source_id(ws_name, name)
        after = now
        late_from: datetime | None = None
        took_over = entry is None and self._owner.took_over(name)
        if entry is None and not self._synced_once and trig.catch_up:
            last = await self._last_fired(source_id)
            if last is not None:
                after = min(last, now)
                log.info("scheduler_catch_up_from", trigger=name, last_fired=_iso(last))
        elif took_over:
            # The previous owner died: fire what it did not, within the window.
            last = await self._last_fired(source_id)
            floor = now - self._takeover_window
            after = min(now, max(last, floor)) if last is not None else now
            late_from = after
            log.info("scheduler_took_over", trigger=name, from_time=_iso(after))
        self._entries[name] = _Entry(
            name, trig, schedule, source_id, ws_name, after, _next(schedule, name, after),
            late_from,
        )  # fmt: skip
        if entry is not None:
            log.info("scheduler_trigger_rescheduled", trigger=name, cron=trig.cron)

    async def _last_fired(self, source_id: str) -> datetime | None:
        """The newest scheduled time among the trigger's jobs and rejected ticks."""
        store = self._ctx.store
        jobs = await store.list_jobs(
            JobFilter(source_type=SOURCE_TYPE, source_id=source_id, limit=_LOOKBACK)
        )
        rejected = await store.list_rejected(source_id=source_id, limit=_LOOKBACK)
        keys = [j.dedup_key for j in jobs]
        keys += [r.dedup_key for r in rejected if r.source_type == SOURCE_TYPE]
        # Several processes may insert out of order: the max, not the newest job's time.
        times = [t for t in (parse_scheduled_time(k, source_id) for k in keys) if t is not None]
        return max(times, default=None)

    # -- firing -----------------------------------------------------------------------------
    async def _fire_due(self, now: datetime) -> list[TickResult]:
        due: list[tuple[_Entry, list[datetime]]] = []
        for entry in self._entries.values():
            if entry.next is None or entry.next > now:
                continue
            due.append((entry, self._due_ticks(entry, now)))
        if not due:
            return []
        for entry, _ in due:
            if entry.trigger.force_refresh:  # once: the reload serves every due trigger
                await refreshed_workspace(self._ctx, entry.name)
                break
        events: list[Event] = []
        labels: list[tuple[str, datetime]] = []
        unrenderable: list[RejectedEvent] = []
        base_context = secret_context(self._ctx)
        for entry, due_ticks in due:
            admission = await admit_ticks(
                self._ctx.store,
                entry.trigger.concurrency,
                entry.name,
                entry.source_id,
                due_ticks,
            )
            unrenderable.extend(_skipped(entry, tick, admission) for tick in admission.skipped)
            for tick in admission.fire:
                event = self._event(entry, tick, base_context)
                if isinstance(event, RejectedEvent):
                    unrenderable.append(event)
                else:
                    events.append(event)
                    labels.append((entry.name, tick))
        if unrenderable:
            await self._ctx.dispatcher.reject(unrenderable)
        outcomes = await self._ctx.dispatcher.dispatch_many(events) if events else []
        # Only after the commit: a failed insert leaves the ticks due for the retry.
        for entry, _ in due:
            entry.after = now
            entry.next = _next(entry.schedule, entry.name, now)
        results = [
            TickResult(name, tick, outcome)
            for (name, tick), outcome in zip(labels, outcomes, strict=True)
        ]
        for r in results:
            _log_outcome(r)
        return results

    def _due_ticks(self, entry: _Entry, now: datetime) -> list[datetime]:
        ticks, capped = entry.schedule.ticks_between(entry.after, now, self._max_catch_up)
        if entry.trigger.catch_up:
            if capped:
                log.warning(
                    "scheduler_catch_up_capped",
                    trigger=entry.name,
                    made_up=len(ticks),
                    oldest_made_up=_iso(ticks[0]) if ticks else None,
                    missed_since=_iso(entry.after),
                )
            return ticks
        late_from, entry.late_from = entry.late_from, None
        on_time = [
            t
            for t in ticks
            if now - t <= self._tolerance or (late_from is not None and t > late_from)
        ]
        missed = len(ticks) - len(on_time)
        if missed or capped:
            log.warning(
                "scheduler_missed_ticks",
                trigger=entry.name,
                skipped=f"more than {missed}" if capped else missed,
                since=_iso(entry.after),
                hint="set catch_up: true on the trigger to make missed ticks up",
            )
        return on_time

    def _event(
        self, entry: _Entry, tick: datetime, base_context: Mapping[str, Any]
    ) -> Event | RejectedEvent:
        trig = entry.trigger
        key = scheduler_dedup_key(entry.workspace, entry.name, tick)
        context = {
            **base_context,
            "schedule": {
                "time": _iso(tick),
                "local_time": tick.astimezone(zoneinfo.ZoneInfo(trig.timezone)).isoformat(),
                "trigger": entry.name,
            },
        }
        try:
            defaults = self._ctx.templates.render(
                trig.input, context, where=f"trigger {entry.name!r} input"
            )
        except TemplateError as exc:
            # Failures are values: the tick is stored as rejected (once, by its key).
            log.warning("scheduler_input_error", trigger=entry.name, error=str(exc))
            return RejectedEvent(
                id=None,
                source_type=SOURCE_TYPE,
                source_id=entry.source_id,
                target_task=trig.task,
                payload={},
                reason=str(exc),
                dedup_key=key,
            )
        return Event(
            target_task=trig.task,
            payload={},
            source_type=SOURCE_TYPE,
            source_id=entry.source_id,
            dedup_key=key,
            # Secret values become references the worker fills in: never stored.
            defaults=(
                seal(defaults, self._ctx.secrets(), entry.source_id)
                if isinstance(defaults, Mapping)
                else {}
            ),
        )

    # -- sleeping ---------------------------------------------------------------------------
    def _delay(self) -> float:
        pending = [e.next for e in self._entries.values() if e.next is not None]
        if not pending:
            return self._max_sleep
        seconds = (min(pending) - self._clock()).total_seconds()
        # +1 ms: the loop's monotonic timer may fire a hair before the wall-clock tick.
        return max(0.0, min(self._max_sleep, seconds + 0.001))

    async def _sleep(self, stop: asyncio.Event, delay: float) -> None:
        if delay <= 0:
            await asyncio.sleep(0)
            return
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        self._wake.clear()


def _skipped(entry: _Entry, tick: datetime, admission: Admission) -> RejectedEvent:
    # Recorded under the tick's key: visible, replayable, and the tick counts as handled.
    return RejectedEvent(
        id=None,
        source_type=SOURCE_TYPE,
        source_id=entry.source_id,
        target_task=entry.trigger.task,
        payload={},
        reason=admission.reason,
        dedup_key=scheduler_dedup_key(entry.workspace, entry.name, tick),
    )


def _next(schedule: CronSchedule, name: str, after: datetime) -> datetime | None:
    try:
        return schedule.next_after(after)
    except ValueError as exc:  # CroniterBadDateError: e.g. "0 0 30 2 *" never happens
        log.error("scheduler_never_due", trigger=name, cron=schedule.expression, error=str(exc))
        return None


def _log_outcome(result: TickResult) -> None:
    status = result.outcome.status
    if status is DispatchStatus.ACCEPTED:
        log.info(
            "scheduler_fired",
            trigger=result.trigger,
            scheduled=_iso(result.scheduled),
            job_id=result.outcome.job_id,
        )
    elif status is DispatchStatus.DUPLICATE:
        # Another process (or this one before a restart) fired it already.
        log.debug(
            "scheduler_tick_already_fired",
            trigger=result.trigger,
            scheduled=_iso(result.scheduled),
            job_id=result.outcome.job_id,
        )
    else:
        log.warning(
            "scheduler_tick_rejected",
            trigger=result.trigger,
            scheduled=_iso(result.scheduled),
            reason=result.outcome.reason,
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)
