"""The event-source manager: one consumer job per enabled ``event_source`` trigger.

It keeps the seed's promises:
- restart policy ``always`` / ``on_failure`` / ``never`` with backoff
  ``backoff_secs × 2^(n−1)`` capped at 300 s, reset by an exit 0 or a run that stayed
  healthy for ``healthy_run_secs``;
- ``never`` and a clean exit under ``on_failure`` leave the trigger idle until an
  operator restarts it, also across restarts of headwater;
- crash-loop quarantine: ``max_crashes`` failures within ``crash_window_secs`` park the
  trigger until ``headwater triggers release NAME``;
- at most one consumer per trigger: each start is a job whose dedup key carries the
  start's generation, so two managers racing to start the same generation create one.
All of it lives in the store (namespace ``trigger``), so a restart resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog

from headwater.dispatch.dispatcher import Dispatcher, Event
from headwater.errors import ConflictError, HeadwaterError, NotFoundError
from headwater.store.base import Channel, JobRecord, JobStatus, Store, Subscription
from headwater.triggers.owner import ServesAll, TriggerOwner
from headwater.workspace.models import EventSourceTrigger, RestartPolicy, Workspace

__all__ = [
    "CONSUMER_SOURCE_TYPE",
    "EventSourceManager",
    "TriggerPhase",
    "TriggerState",
    "consumer_source_id",
    "trigger_key",
]

log = structlog.get_logger(__name__)

CONSUMER_SOURCE_TYPE = "event_source_consumer"
STATE_NAMESPACE = "trigger"
MAX_BACKOFF = 300.0
# A consumer job whose worker died goes back to the queue (with its priority) for up to
# this many workers; a crashing consumer is the restart policy's business anyway.
CONSUMER_MAX_ATTEMPTS = 10
# Consumer jobs are claimed before any other job: a consumer started (or requeued by
# recovery after a crash) while its own earlier events wait by the thousand must not
# queue behind them (measured: a restarted server resumed ingest only once the backlog
# older than the consumer job had run, seconds to minutes later).
CONSUMER_PRIORITY = 2**31 - 1


def trigger_key(workspace: str, name: str) -> str:
    return f"{workspace}/{name}"


def consumer_source_id(key: str) -> str:
    """Consumer jobs have their own source id so that they never count as in flight."""
    return f"{key}#consumer"


class TriggerPhase(StrEnum):
    RUNNING = "running"
    BACKOFF = "backoff"
    IDLE = "idle"
    QUARANTINED = "quarantined"
    DISABLED = "disabled"
    PAUSED = "paused"  # ``headwater pause trigger``: its consumer stopped, cursor kept


@dataclass
class TriggerState:
    """What the store remembers of one event-source trigger."""

    phase: TriggerPhase = TriggerPhase.IDLE
    generation: int = 0  # how many consumers were started
    consumer_job_id: str | None = None
    consumer_started_at: float | None = None  # wall clock (epoch seconds)
    restarts: int = 0
    consecutive_failures: int = 0
    next_restart_at: float | None = None
    crash_times: list[float] = field(default_factory=list)
    last_error: str | None = None
    last_exit: str | None = None
    idle_reason: str | None = None
    quarantined_at: float | None = None
    config_hash: str | None = None
    stop_reason: str | None = None  # set when we cancelled the consumer on purpose

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = self.phase.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TriggerState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["phase"] = TriggerPhase(known.get("phase", "idle"))
        return cls(**known)


def _config_hash(trigger: EventSourceTrigger) -> str:
    text = json.dumps(trigger.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EventSourceManager:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        workspace: Any,  # Callable[[], Workspace]
        owner: TriggerOwner | None = None,
        paused: Callable[[str], bool] | None = None,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._workspace = workspace
        # ``headwater pause trigger``: the consumer is stopped as for a disabled trigger
        # (its cursor stays) and started again on resume.
        self._paused = paused or (lambda name: False)
        # Several servers: each reconciles only the triggers whose lease it holds.
        self._owner: TriggerOwner = owner or ServesAll()
        self._wake = asyncio.Event()
        self._consumers: set[str] = set()  # consumer jobs whose finish needs a reconcile

    def wake(self) -> None:
        """Reconcile now (workspace reloaded, operator action)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        with self._store.subscribe(Channel.FINISHED) as finished:
            stop_wait = asyncio.ensure_future(stop.wait())
            try:
                while not stop.is_set():
                    try:
                        delay = await self.reconcile()
                    except Exception:
                        log.exception("event_source_reconcile_failed")
                        delay = 5.0
                    await self._wait(finished, stop_wait, delay)
            finally:
                stop_wait.cancel()

    async def _wait(
        self, finished: Subscription, stop_wait: asyncio.Future[Any], delay: float
    ) -> None:
        """Until ``delay`` is over, ``wake()`` is called, or a consumer job finishes. Every
        job's finish is announced on Channel.FINISHED: at 1,000 jobs/s reconciling on each
        announcement (a few queries each) took most of the event loop, so the others are
        let pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while not stop_wait.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            wake = asyncio.ensure_future(self._wake.wait())
            fin = asyncio.ensure_future(finished.wait(remaining))
            done, _ = await asyncio.wait(
                [wake, fin, stop_wait], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            wake.cancel()
            fin.cancel()
            if wake in done:
                self._wake.clear()
                return
            if fin in done and not fin.cancelled() and self._concerns_consumers(fin.result()):
                return

    def _concerns_consumers(self, payloads: list[str]) -> bool:
        for payload in payloads:
            if payload == "*" or not self._consumers.isdisjoint(payload.split(",")):
                return True
        return False

    # -- reconcile -----------------------------------------------------------------------
    async def reconcile(self) -> float:
        """Bring every trigger to its desired state; returns seconds until the next
        scheduled action (a backoff expiring), at most 30."""
        ws: Workspace = self._workspace()
        next_due = 30.0
        now = time.time()
        seen: set[str] = set()
        self._consumers = set()
        for name, trigger in ws.triggers.items():
            if not isinstance(trigger, EventSourceTrigger):
                continue
            key = trigger_key(ws.name, name)
            seen.add(key)
            if not self._owner.owns(name):
                continue
            due = await self._reconcile_one(ws, key, trigger, now, self._paused(name))
            if due is not None:
                next_due = min(next_due, max(0.0, due - time.time()))
        if not self._owner.is_janitor():
            return next_due
        for record in await self._store.list_state(STATE_NAMESPACE):
            if record.key.startswith(f"{ws.name}/") and record.key not in seen:
                await self._retire(record.key, TriggerState.from_json(record.value))
        return next_due

    async def _reconcile_one(
        self,
        ws: Workspace,
        key: str,
        trigger: EventSourceTrigger,
        now: float,
        paused: bool = False,
    ) -> float | None:
        """One trigger; returns when it next needs attention (epoch seconds) or None."""
        record = await self._store.get_state(STATE_NAMESPACE, key)
        state = TriggerState.from_json(record.value) if record else TriggerState()
        if state.consumer_job_id is not None:
            self._consumers.add(state.consumer_job_id)
        version = record.version if record else 0
        before = state.to_json()
        config = _config_hash(trigger)

        if state.consumer_job_id is not None:
            job = await self._store.get_job(state.consumer_job_id)
            # The consumer may have exited while this pass waited on the store: a clock read
            # at the pass's start would date the exit back and cut the backoff short.
            now = time.time()
            if job is not None and not job.status.is_terminal:
                changed = state.config_hash not in (None, config)
                if (not trigger.enabled or paused or changed) and state.stop_reason is None:
                    state.stop_reason = (
                        "disabled"
                        if not trigger.enabled
                        else ("paused" if paused else "reconfigured")
                    )
                    log.info("event_source_stopping", trigger=key, reason=state.stop_reason)
                    with contextlib.suppress(ConflictError, NotFoundError):
                        await self._store.request_cancel(job.id)
                elif trigger.enabled and not paused and not changed:
                    state.phase = TriggerPhase.RUNNING
                    self._note_healthy(state, trigger, now)
                if state.to_json() != before:
                    await self._save(key, state, version)
                return None
            self._on_exit(key, trigger, state, job, now)

        if not trigger.enabled:
            state.phase = TriggerPhase.DISABLED
        elif paused:
            if state.phase is not TriggerPhase.QUARANTINED:  # a quarantine outlives a pause
                state.phase = TriggerPhase.PAUSED
        elif state.phase in (TriggerPhase.DISABLED, TriggerPhase.PAUSED) or (
            state.phase is TriggerPhase.IDLE and state.generation == 0
        ):
            state.phase = TriggerPhase.BACKOFF  # a new or re-enabled trigger starts now
            state.next_restart_at = now
        due = state.next_restart_at if state.phase is TriggerPhase.BACKOFF else None
        if due is not None and due <= now:
            await self._start(key, trigger, state, config, now, version)
            return None
        if state.to_json() != before:
            await self._save(key, state, version)
        return due

    def _note_healthy(self, state: TriggerState, trigger: EventSourceTrigger, now: float) -> None:
        started = state.consumer_started_at
        healthy = started is not None and now - started >= trigger.healthy_run_secs
        if healthy and (state.consecutive_failures or state.crash_times):
            state.consecutive_failures = 0
            state.crash_times = []

    def _on_exit(
        self,
        key: str,
        trigger: EventSourceTrigger,
        state: TriggerState,
        job: JobRecord | None,
        now: float,
    ) -> None:
        """The consumer job is final: decide restart, idle or quarantine."""
        status = job.status if job is not None else JobStatus.FAILED
        error = job.error if job is not None else "consumer job disappeared"
        state.consumer_job_id = None
        state.last_exit = status.value
        ran_for = now - state.consumer_started_at if state.consumer_started_at else 0.0
        stopped_on_purpose = state.stop_reason is not None and status is JobStatus.CANCELLED
        state.stop_reason = None
        if stopped_on_purpose:
            # We stopped it (disabled / reconfigured): not a crash; restart fresh.
            state.phase = TriggerPhase.BACKOFF
            state.next_restart_at = now
            return
        if ran_for >= trigger.healthy_run_secs:
            state.consecutive_failures = 0
            state.crash_times = []
        clean = status is JobStatus.COMPLETED
        if clean:
            state.consecutive_failures = 0
            state.last_error = None
        else:
            state.consecutive_failures += 1
            state.last_error = error or status.value
            state.crash_times = [
                t for t in state.crash_times if now - t < trigger.crash_window_secs
            ] + [now]
            if len(state.crash_times) >= trigger.max_crashes:
                state.phase = TriggerPhase.QUARANTINED
                state.quarantined_at = now
                state.idle_reason = (
                    f"crash loop: {len(state.crash_times)} crashes within "
                    f"{trigger.crash_window_secs:g}s"
                )
                log.error("event_source_quarantined", trigger=key, crashes=len(state.crash_times))
                return
        policy = trigger.restart_policy
        if policy is RestartPolicy.NEVER or (policy is RestartPolicy.ON_FAILURE and clean):
            state.phase = TriggerPhase.IDLE
            state.idle_reason = (
                "restart_policy never"
                if policy is RestartPolicy.NEVER
                else "exited cleanly under restart_policy on_failure"
            )
            log.info("event_source_idle", trigger=key, reason=state.idle_reason)
            return
        delay = min(MAX_BACKOFF, trigger.backoff_delay(max(1, state.consecutive_failures)))
        state.phase = TriggerPhase.BACKOFF
        state.next_restart_at = now + delay
        log.info("event_source_backoff", trigger=key, delay=delay, exit=status.value)

    async def _start(
        self,
        key: str,
        trigger: EventSourceTrigger,
        state: TriggerState,
        config: str,
        now: float,
        version: int,
    ) -> None:
        generation = state.generation + 1
        (outcome,) = await self._dispatcher.dispatch(
            [
                Event(
                    trigger.task,
                    {},
                    CONSUMER_SOURCE_TYPE,
                    source_id=consumer_source_id(key),
                    dedup_key=f"consumer:{key}:{generation}",
                    max_attempts=CONSUMER_MAX_ATTEMPTS,
                    priority=CONSUMER_PRIORITY,
                )
            ]
        )
        if outcome.job_id is None:
            state.phase = TriggerPhase.IDLE
            state.idle_reason = f"consumer task could not start: {outcome.reason}"
            state.last_error = state.idle_reason
            await self._save(key, state, version)
            return
        if state.generation > 0:
            state.restarts += 1
        state.generation = generation
        state.consumer_job_id = outcome.job_id
        self._consumers.add(outcome.job_id)
        state.consumer_started_at = now
        state.phase = TriggerPhase.RUNNING
        state.next_restart_at = None
        state.idle_reason = None
        state.config_hash = config
        if await self._save(key, state, version) is None:
            return  # another manager started this generation; the job is the same one
        log.info("event_source_started", trigger=key, job_id=outcome.job_id, generation=generation)

    async def _retire(self, key: str, state: TriggerState) -> None:
        """The trigger left the workspace: stop its consumer and forget it."""
        if state.consumer_job_id is not None:
            with contextlib.suppress(HeadwaterError):
                await self._store.request_cancel(state.consumer_job_id)
        await self._store.delete_state(STATE_NAMESPACE, key)
        log.info("event_source_removed", trigger=key)

    async def _save(self, key: str, state: TriggerState, version: int) -> int | None:
        """Compare-and-set; None when another manager changed it first (the next
        reconcile re-reads it)."""
        try:
            record = await self._store.put_state(STATE_NAMESPACE, key, state.to_json(), version)
        except ConflictError:
            return None
        return record.version

    # -- operator actions ----------------------------------------------------------------
    async def restart(self, key: str) -> TriggerState:
        """Start an idle, backing-off or quarantined trigger again (also releases it)."""
        record = await self._store.get_state(STATE_NAMESPACE, key)
        state = TriggerState.from_json(record.value) if record else TriggerState()
        if state.consumer_job_id is not None:
            self._consumers.add(state.consumer_job_id)
        if state.consumer_job_id is not None:
            state.stop_reason = "restarted by operator"
            with contextlib.suppress(ConflictError, NotFoundError):
                await self._store.request_cancel(state.consumer_job_id)
        else:
            state.phase = TriggerPhase.BACKOFF
            state.next_restart_at = time.time()
        state.crash_times = []
        state.consecutive_failures = 0
        state.quarantined_at = None
        state.idle_reason = None
        await self._store.put_state(
            STATE_NAMESPACE, key, state.to_json(), record.version if record else 0
        )
        self.wake()
        return state

    async def release(self, key: str) -> TriggerState:
        record = await self._store.get_state(STATE_NAMESPACE, key)
        if record is None or TriggerState.from_json(record.value).phase is not (
            TriggerPhase.QUARANTINED
        ):
            raise ConflictError(f"trigger {key!r} is not quarantined")
        return await self.restart(key)

    async def states(self) -> dict[str, TriggerState]:
        return {
            r.key: TriggerState.from_json(r.value)
            for r in await self._store.list_state(STATE_NAMESPACE)
        }


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
