"""The event-source restart state machine on a controlled clock: backoff counted from the
exit, crashes leave the window, a healthy run forgets the incident.

The consumer jobs are real jobs in a SQLite store; the test plays the worker by finishing
them, and moves the manager's wall clock by hand.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher
from headwater.errors import ConflictError
from headwater.store.base import JobFilter, JobStatus, Store
from headwater.store.ids import tag_signature
from headwater.store.sql import open_store
from headwater.triggers import event_source
from headwater.triggers.event_source import (
    CONSUMER_MAX_ATTEMPTS,
    CONSUMER_SOURCE_TYPE,
    EventSourceManager,
    TriggerPhase,
    TriggerState,
    trigger_key,
)
from headwater.workspace.loader import load_workspace
from headwater.workspace.models import Workspace

WORKSPACE = """
actions:
  noop: {{ type: script, script: "true" }}
tasks:
  consumer:
    flow:
      s: {{ action: noop }}
  target:
    flow:
      s: {{ action: noop }}
triggers:
  src:
    type: event_source
    task: consumer
    target_task: target
    restart_policy: {policy}
    enabled: {enabled}
    backoff_secs: 1
    max_crashes: 3
    crash_window_secs: 60
    healthy_run_secs: {healthy}
"""


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@dataclass
class Rig:
    store: Store
    manager: EventSourceManager
    clock: Clock
    key: str
    ws: Workspace
    path: Path

    def reload(self, **settings: Any) -> None:
        """The workspace file changes (as a reload would see it)."""
        self.path.write_text(_text(**settings))
        self.ws = load_workspace(self.path)

    async def finish(self, status: JobStatus, after: float = 1.0) -> TriggerState:
        """The running consumer ends ``after`` seconds from now; the manager notices."""
        job_id = (await self.state()).consumer_job_id
        assert job_id is not None
        self.clock.now += after
        assert await self.store.finish_job(job_id, None, status, error="boom")
        due = await self.manager.reconcile()
        state = await self.state()
        if state.next_restart_at is not None and state.phase is TriggerPhase.BACKOFF:
            assert due == state.next_restart_at - self.clock.now  # it wakes when due
        return state

    async def state(self) -> TriggerState:
        return (await self.manager.states())[self.key]

    async def start(self) -> str:
        """Reconcile until a consumer runs; returns its job id."""
        await self.manager.reconcile()
        state = await self.state()
        assert state.phase is TriggerPhase.RUNNING, state
        assert state.consumer_job_id is not None
        job = await self.store.get_job(state.consumer_job_id)
        assert job is not None
        signature = tag_signature(job.tags)
        claimed = await self.store.claim_jobs("worker", [signature], 10)  # a worker runs it
        assert [j.id for j in claimed] == [state.consumer_job_id]
        return state.consumer_job_id

    async def crash(self, after: float) -> TriggerState:
        return await self.finish(JobStatus.FAILED, after)

    async def restart_when_due(self) -> str:
        state = await self.state()
        assert state.phase is TriggerPhase.BACKOFF and state.next_restart_at is not None
        self.clock.now = max(self.clock.now, state.next_restart_at)
        return await self.start()


def _text(healthy: float = 1000, policy: str = "always", enabled: bool = True) -> str:
    return textwrap.dedent(
        WORKSPACE.format(healthy=healthy, policy=policy, enabled=str(enabled).lower())
    )


async def _rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Rig:
    path = tmp_path / "ws.yaml"
    path.write_text(_text(**settings))
    ws = load_workspace(path)
    store = await open_store(f"sqlite:///{tmp_path}/headwater.db")
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(event_source, "time", clock)
    rig = Rig(store, None, clock, trigger_key(ws.name, "src"), ws, path)  # type: ignore[arg-type]
    rig.manager = _manager(rig)
    return rig


def _manager(rig: Rig) -> EventSourceManager:
    """A manager as a (re)started headwater process makes it, on the rig's store."""
    return EventSourceManager(rig.store, Dispatcher(rig.store, lambda: rig.ws), lambda: rig.ws)


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    r = await _rig(tmp_path, monkeypatch)
    try:
        yield r
    finally:
        await r.store.close()


async def test_crashes_older_than_the_window_do_not_count(rig: Rig) -> None:
    await rig.start()
    await rig.crash(after=1)
    await rig.restart_when_due()
    state = await rig.crash(after=1)
    assert len(state.crash_times) == 2  # one more within 60 s would quarantine
    await rig.restart_when_due()
    state = await rig.crash(after=61)  # both earlier crashes are now outside the window
    assert state.phase is TriggerPhase.BACKOFF
    assert state.crash_times == [rig.clock.now]
    assert state.quarantined_at is None


async def test_max_crashes_within_the_window_quarantine(rig: Rig) -> None:
    await rig.start()
    for _ in range(2):
        await rig.crash(after=1)
        await rig.restart_when_due()
    state = await rig.crash(after=1)
    assert state.phase is TriggerPhase.QUARANTINED
    assert state.idle_reason == "crash loop: 3 crashes within 60s"


async def test_backoff_doubles_per_consecutive_failure_counted_from_the_exit(rig: Rig) -> None:
    await rig.start()
    delays = []
    for _ in range(2):
        state = await rig.crash(after=0.5)
        assert state.next_restart_at is not None
        delays.append(state.next_restart_at - rig.clock.now)
        await rig.restart_when_due()
    assert delays == [1.0, 2.0]


async def test_the_backoff_starts_when_the_exit_is_seen_not_when_the_pass_began(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that began before the consumer exited (a slow pass under load) must not
    date the exit back to its own start: the restart would come before the backoff."""
    job_id = await rig.start()
    get_job = rig.store.get_job

    async def slow_get_job(job: str) -> Any:
        # The consumer crashes while this pass is waiting on the store, 5 s into the pass.
        rig.clock.now += 5
        await rig.store.finish_job(job_id, None, JobStatus.FAILED, error="boom")
        monkeypatch.setattr(rig.store, "get_job", get_job)
        return await get_job(job)

    monkeypatch.setattr(rig.store, "get_job", slow_get_job)
    await rig.manager.reconcile()
    state = await rig.state()
    assert state.phase is TriggerPhase.BACKOFF
    assert state.next_restart_at == rig.clock.now + 1.0  # one backoff after the exit


async def test_a_run_longer_than_healthy_run_secs_resets_the_failure_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await _rig(tmp_path, monkeypatch, healthy=30)
    try:
        await rig.start()
        await rig.crash(after=1)
        await rig.restart_when_due()
        state = await rig.crash(after=1)
        assert state.consecutive_failures == 2
        await rig.restart_when_due()
        state = await rig.crash(after=31)  # a healthy run, then a crash: a fresh incident
        assert state.consecutive_failures == 1
        assert state.crash_times == [rig.clock.now]
        assert state.next_restart_at == rig.clock.now + 1.0  # the first backoff again
    finally:
        await rig.store.close()


async def test_a_consumer_still_running_past_healthy_run_secs_is_reported_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await _rig(tmp_path, monkeypatch, healthy=30)
    try:
        await rig.start()
        await rig.crash(after=1)
        await rig.restart_when_due()
        rig.clock.now += 31
        await rig.manager.reconcile()  # still running, for longer than healthy_run_secs
        state = await rig.state()
        assert state.phase is TriggerPhase.RUNNING
        assert (state.consecutive_failures, state.crash_times) == (0, [])
    finally:
        await rig.store.close()


async def test_a_crash_exactly_crash_window_secs_old_has_left_the_window(rig: Rig) -> None:
    await rig.start()
    await rig.crash(after=1)
    await rig.restart_when_due()
    first = (await rig.state()).crash_times[0]
    await rig.crash(after=1)
    await rig.restart_when_due()
    rig.clock.now = first + 60 - 0.5
    state = await rig.crash(after=0.5)  # the first crash is exactly 60 s old
    assert state.phase is TriggerPhase.BACKOFF
    assert len(state.crash_times) == 2


async def test_a_run_of_exactly_healthy_run_secs_is_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await _rig(tmp_path, monkeypatch, healthy=30)
    try:
        await rig.start()
        await rig.crash(after=1)
        await rig.restart_when_due()
        state = await rig.crash(after=30)
        assert (state.consecutive_failures, len(state.crash_times)) == (1, 1)
        await rig.restart_when_due()
        rig.clock.now += 30
        await rig.manager.reconcile()
        assert (await rig.state()).consecutive_failures == 0
    finally:
        await rig.store.close()


async def test_quarantine_is_recorded_and_survives_a_new_manager(rig: Rig) -> None:
    await rig.start()
    for _ in range(2):
        await rig.crash(after=1)
        await rig.restart_when_due()
    state = await rig.crash(after=1)
    assert state.quarantined_at == rig.clock.now
    assert state.last_error == "boom" and state.last_exit == "failed"
    rig.clock.now += 3600
    rig.manager = _manager(rig)  # headwater restarted
    assert await rig.manager.reconcile() == 30.0  # nothing to do: no restart scheduled
    assert (await rig.state()).phase is TriggerPhase.QUARANTINED
    assert (await rig.state()).consumer_job_id is None


async def test_release_starts_a_quarantined_trigger_with_a_clean_history(rig: Rig) -> None:
    await rig.start()
    with pytest.raises(ConflictError, match="not quarantined"):
        await rig.manager.release(rig.key)
    for _ in range(2):
        await rig.crash(after=1)
        await rig.restart_when_due()
    await rig.crash(after=1)
    released = await rig.manager.release(rig.key)
    assert released.phase is TriggerPhase.BACKOFF
    assert released.next_restart_at == rig.clock.now
    assert (released.crash_times, released.consecutive_failures) == ([], 0)
    assert released.quarantined_at is None and released.idle_reason is None
    await rig.start()
    state = await rig.crash(after=1)
    assert state.phase is TriggerPhase.BACKOFF  # one crash, not the fourth


async def test_a_clean_exit_under_always_restarts_after_the_first_backoff(rig: Rig) -> None:
    await rig.start()
    await rig.crash(after=1)
    await rig.restart_when_due()
    state = await rig.finish(JobStatus.COMPLETED)
    assert state.phase is TriggerPhase.BACKOFF
    assert (state.consecutive_failures, state.last_error) == (0, None)
    assert state.last_exit == "completed"
    assert state.next_restart_at == rig.clock.now + 1.0
    generation = state.generation
    await rig.restart_when_due()
    state = await rig.state()
    assert (state.generation, state.restarts) == (generation + 1, 2)


@pytest.mark.parametrize(
    ("policy", "status", "reason"),
    [
        ("never", JobStatus.COMPLETED, "restart_policy never"),
        ("never", JobStatus.FAILED, "restart_policy never"),
        ("on_failure", JobStatus.COMPLETED, "exited cleanly under restart_policy on_failure"),
    ],
)
async def test_restart_policy_leaves_the_trigger_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str, status: JobStatus, reason: str
) -> None:
    rig = await _rig(tmp_path, monkeypatch, policy=policy)
    try:
        await rig.start()
        state = await rig.finish(status)
        assert state.phase is TriggerPhase.IDLE
        assert state.idle_reason == reason
        assert state.next_restart_at is None
        rig.clock.now += 3600
        rig.manager = _manager(rig)
        await rig.manager.reconcile()
        assert (await rig.state()).phase is TriggerPhase.IDLE  # also after a restart
        restarted = await rig.manager.restart(rig.key)  # until an operator restarts it
        assert restarted.phase is TriggerPhase.BACKOFF and restarted.idle_reason is None
        await rig.start()
    finally:
        await rig.store.close()


async def test_on_failure_restarts_a_failed_consumer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await _rig(tmp_path, monkeypatch, policy="on_failure")
    try:
        await rig.start()
        state = await rig.crash(after=1)
        assert state.phase is TriggerPhase.BACKOFF
        assert state.last_error == "boom"
    finally:
        await rig.store.close()


async def test_disabling_cancels_the_consumer_and_is_not_a_crash(rig: Rig) -> None:
    job_id = await rig.start()
    rig.reload(enabled=False)
    await rig.manager.reconcile()
    job = await rig.store.get_job(job_id)
    assert job is not None and job.cancel_requested
    assert (await rig.state()).stop_reason == "disabled"
    state = await rig.finish(JobStatus.CANCELLED)
    assert state.phase is TriggerPhase.DISABLED
    assert (state.consecutive_failures, state.crash_times, state.consumer_job_id) == (0, [], None)
    rig.reload(enabled=True)
    await rig.start()  # re-enabled: starts at once


async def test_a_changed_configuration_restarts_the_consumer_at_once(rig: Rig) -> None:
    job_id = await rig.start()
    await rig.manager.reconcile()  # unchanged: left alone
    job = await rig.store.get_job(job_id)
    assert job is not None and not job.cancel_requested
    rig.reload(policy="on_failure")
    await rig.manager.reconcile()
    job = await rig.store.get_job(job_id)
    assert job is not None and job.cancel_requested
    assert (await rig.state()).stop_reason == "reconfigured"
    state = await rig.finish(JobStatus.CANCELLED, after=0)
    assert state.consecutive_failures == 0 and state.crash_times == []
    assert (state.phase, state.consumer_job_id) != (TriggerPhase.BACKOFF, None)
    assert state.consumer_job_id not in (None, job_id)  # started again in the same pass


async def test_a_trigger_removed_from_the_workspace_is_stopped_and_forgotten(rig: Rig) -> None:
    job_id = await rig.start()
    rig.ws = rig.ws.model_copy(update={"triggers": {}})
    await rig.manager.reconcile()
    job = await rig.store.get_job(job_id)
    assert job is not None and job.cancel_requested
    assert await rig.manager.states() == {}


async def test_two_managers_start_one_consumer_counted_apart_from_the_events(rig: Rig) -> None:
    other = _manager(rig)  # a second server on the same store
    await asyncio.gather(rig.manager.reconcile(), other.reconcile())
    (consumer,) = await rig.store.list_jobs(JobFilter(source_type=CONSUMER_SOURCE_TYPE))
    state = await rig.state()
    assert (state.consumer_job_id, state.generation) == (consumer.id, 1)
    assert consumer.source_id == f"{rig.key}#consumer"
    assert consumer.max_attempts == CONSUMER_MAX_ATTEMPTS
    assert await rig.store.count_in_flight(rig.key) == 0  # the consumer is not an event


async def test_an_operator_restart_stops_the_running_consumer_and_starts_a_new_one(
    rig: Rig,
) -> None:
    job_id = await rig.start()
    state = await rig.manager.restart(rig.key)
    assert state.stop_reason == "restarted by operator"
    job = await rig.store.get_job(job_id)
    assert job is not None and job.cancel_requested
    state = await rig.finish(JobStatus.CANCELLED, after=0)
    assert state.consumer_job_id not in (None, job_id)  # a new one at once, not a crash
    assert (state.consecutive_failures, state.restarts) == (0, 1)


async def test_a_consumer_cancelled_by_someone_else_counts_as_a_failure(rig: Rig) -> None:
    await rig.start()
    state = await rig.finish(JobStatus.CANCELLED)  # e.g. `headwater cancel` on the consumer
    assert state.phase is TriggerPhase.BACKOFF
    assert state.consecutive_failures == 1
    assert state.next_restart_at == rig.clock.now + 1.0


async def test_a_running_consumer_younger_than_healthy_run_secs_keeps_its_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await _rig(tmp_path, monkeypatch, healthy=30)
    try:
        await rig.start()
        await rig.crash(after=1)
        await rig.restart_when_due()
        rig.clock.now += 29
        await rig.manager.reconcile()
        state = await rig.state()
        assert (state.consecutive_failures, len(state.crash_times)) == (1, 1)
    finally:
        await rig.store.close()


async def test_a_consumer_task_that_cannot_start_leaves_the_trigger_idle_with_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await _rig(tmp_path, monkeypatch)
    try:
        text = _text().replace(
            "  consumer:\n    flow:",
            "  consumer:\n    input:\n      n: { type: integer, required: true }\n    flow:",
        )
        rig.path.write_text(text)
        rig.ws = load_workspace(rig.path)
        await rig.manager.reconcile()
        state = await rig.state()
        assert state.phase is TriggerPhase.IDLE
        assert state.idle_reason is not None
        assert state.idle_reason.startswith("consumer task could not start:")
        assert "`n`" in state.idle_reason
        assert state.last_error == state.idle_reason
    finally:
        await rig.store.close()


async def test_a_start_whose_state_was_never_saved_reuses_its_consumer_job(rig: Rig) -> None:
    """headwater dies between creating the consumer job and saving that it did: the next
    manager starts the same generation again, which must be the same job, not a second."""

    async def lost(key: str, state: TriggerState, version: int) -> int | None:
        return None

    rig.manager._save = lost  # type: ignore[method-assign]
    await rig.manager.reconcile()
    assert await rig.manager.states() == {}
    await _manager(rig).reconcile()
    (consumer,) = await rig.store.list_jobs(JobFilter(source_type=CONSUMER_SOURCE_TYPE))
    assert (await rig.state()).consumer_job_id == consumer.id


async def test_a_paused_trigger_stops_its_consumer_and_starts_a_new_one_on_resume(
    rig: Rig,
) -> None:
    paused = [False]
    rig.manager = EventSourceManager(
        rig.store,
        Dispatcher(rig.store, lambda: rig.ws),
        lambda: rig.ws,
        paused=lambda name: paused[0] and name == "src",
    )
    first = await rig.start()
    paused[0] = True
    await rig.manager.reconcile()
    job = await rig.store.get_job(first)
    assert job is not None and job.cancel_requested  # its worker stops it
    assert (await rig.state()).stop_reason == "paused"
    state = await rig.finish(JobStatus.CANCELLED)
    assert state.phase is TriggerPhase.PAUSED
    assert state.consecutive_failures == 0  # stopped on purpose, not a crash
    rig.clock.now += 3600
    await rig.manager.reconcile()  # however long it waits, nothing starts
    assert (await rig.state()).phase is TriggerPhase.PAUSED
    live = [
        j
        for j in await rig.store.list_jobs(JobFilter(source_type=CONSUMER_SOURCE_TYPE))
        if not j.status.is_terminal
    ]
    assert live == []

    paused[0] = False
    second = await rig.start()
    assert second != first
