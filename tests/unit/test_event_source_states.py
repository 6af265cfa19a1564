"""The event-source restart state machine on a controlled clock: backoff counted from the
exit, crashes leave the window, a healthy run forgets the incident.

The consumer jobs are real jobs in a SQLite store; the test plays the worker by finishing
them, and moves the manager's wall clock by hand.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher
from headwater.store.base import JobStatus, Store
from headwater.store.sql import open_store
from headwater.triggers import event_source
from headwater.triggers.event_source import (
    EventSourceManager,
    TriggerPhase,
    TriggerState,
    trigger_key,
)
from headwater.workspace.loader import load_workspace

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
    restart_policy: always
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

    async def state(self) -> TriggerState:
        return (await self.manager.states())[self.key]

    async def start(self) -> str:
        """Reconcile until a consumer runs; returns its job id."""
        await self.manager.reconcile()
        state = await self.state()
        assert state.phase is TriggerPhase.RUNNING, state
        assert state.consumer_job_id is not None
        return state.consumer_job_id

    async def crash(self, after: float) -> TriggerState:
        """The running consumer fails ``after`` seconds from now; the manager notices."""
        job_id = (await self.state()).consumer_job_id
        assert job_id is not None
        self.clock.now += after
        assert await self.store.finish_job(job_id, None, JobStatus.FAILED, error="boom")
        await self.manager.reconcile()
        return await self.state()

    async def restart_when_due(self) -> str:
        state = await self.state()
        assert state.phase is TriggerPhase.BACKOFF and state.next_restart_at is not None
        self.clock.now = max(self.clock.now, state.next_restart_at)
        return await self.start()


async def _rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, healthy: float) -> Rig:
    (tmp_path / "ws.yaml").write_text(textwrap.dedent(WORKSPACE.format(healthy=healthy)))
    ws = load_workspace(tmp_path / "ws.yaml")
    store = await open_store(f"sqlite:///{tmp_path}/headwater.db")
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(event_source, "time", clock)
    manager = EventSourceManager(store, Dispatcher(store, lambda: ws), lambda: ws)
    return Rig(store, manager, clock, trigger_key(ws.name, "src"))


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    r = await _rig(tmp_path, monkeypatch, healthy=1000)
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
