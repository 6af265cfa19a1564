"""Strøm's scheduler `concurrency` policies, counted from the store (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from headwater.dispatch.dispatcher import BatchingDispatcher, Dispatcher
from headwater.store.base import JobFilter, JobRecord, JobStatus, Store
from headwater.store.sql import open_store
from headwater.triggers.context import CallbackTriggerContext
from headwater.triggers.scheduler import Scheduler
from headwater.workspace.models import (
    Action,
    ActionType,
    SchedulerConcurrency,
    SchedulerTrigger,
    Step,
    Task,
    Workspace,
)
from headwater.workspace.templating import TemplateEngine

T0 = datetime(2025, 6, 2, 12, 0, 0, tzinfo=UTC)
SOURCE = "ws/tick"


def workspace(concurrency: str, catch_up: bool = False) -> Workspace:
    return Workspace(
        name="ws",
        actions={"echo": Action(type=ActionType.SCRIPT, script="echo hi")},
        tasks={"report": Task(flow={"run": Step(action="echo")})},
        triggers={
            "tick": SchedulerTrigger.model_validate(
                {
                    "type": "scheduler",
                    "task": "report",
                    "cron": "* * * * * *",
                    "concurrency": concurrency,
                    "catch_up": catch_up,
                }
            )
        },
    )


class Harness:
    def __init__(self, store: Store, ws: Workspace) -> None:
        self.store = store
        self.batching = BatchingDispatcher(Dispatcher(store, lambda: ws))
        ctx = CallbackTriggerContext(
            store=store,
            dispatcher=self.batching,
            templates=TemplateEngine(),
            workspace=lambda: ws,
            secrets=dict,
        )
        self.scheduler = Scheduler(ctx)

    async def tick(self, seconds: int) -> None:
        await self.scheduler.run_once(T0 + timedelta(seconds=seconds))

    async def jobs(self) -> list[JobRecord]:
        jobs = await self.store.list_jobs(JobFilter(source_id=SOURCE))
        return sorted(jobs, key=lambda j: j.dedup_key or "")

    async def skipped(self) -> list[str]:
        return sorted(
            (r.dedup_key or "")[-9:-1]  # the tick's time, HH:MM:SS
            for r in await self.store.list_rejected(source_id=SOURCE)
        )


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    st = await open_store(db_url)
    try:
        yield st
    finally:
        await st.close()


async def harness(store: Store, ws: Workspace) -> Harness:
    h = Harness(store, ws)
    await store.register_worker("w1", "w1", frozenset())
    await h.tick(0)  # start: nothing due yet
    return h


async def test_allow_starts_a_job_every_tick(store: Store) -> None:
    h = await harness(store, workspace("allow"))
    try:
        for s in (1, 2, 3):
            await h.tick(s)
        assert len(await h.jobs()) == 3
        assert await h.skipped() == []
    finally:
        await h.batching.close()


async def test_skip_waits_until_the_previous_job_has_finished(store: Store) -> None:
    h = await harness(store, workspace("skip"))
    try:
        await h.tick(1)
        await h.tick(2)  # the 12:00:01 job is pending
        (running,) = await store.claim_jobs("w1", ["script"], 100)
        await h.tick(3)  # ... and now running
        assert len(await h.jobs()) == 1
        assert await h.skipped() == ["12:00:02", "12:00:03"]
        (rejected, _) = await store.list_rejected(source_id=SOURCE)
        assert "concurrency: skip" in rejected.reason
        assert await store.finish_job(running.id, "w1", JobStatus.COMPLETED)
        await h.tick(4)
        jobs = await h.jobs()
        assert [j.dedup_key[-9:-1] for j in jobs if j.dedup_key] == ["12:00:01", "12:00:04"]
    finally:
        await h.batching.close()


async def test_skip_with_catch_up_starts_only_the_first_missed_tick(store: Store) -> None:
    h = await harness(store, workspace("skip", catch_up=True))
    try:
        await h.tick(3)  # 12:00:01..03 due at once
        assert [j.dedup_key[-9:-1] for j in await h.jobs() if j.dedup_key] == ["12:00:01"]
        assert await h.skipped() == ["12:00:02", "12:00:03"]
    finally:
        await h.batching.close()


async def test_cancel_previous_cancels_the_running_and_pending_jobs(store: Store) -> None:
    h = await harness(store, workspace("cancel_previous"))
    try:
        await h.tick(1)
        (running,) = await store.claim_jobs("w1", ["script"], 100)
        await h.tick(2)  # cancels the running 12:00:01 job
        await h.tick(3)  # cancels the pending 12:00:02 job
        jobs = {j.dedup_key[-9:-1]: j for j in await h.jobs() if j.dedup_key}
        assert sorted(jobs) == ["12:00:01", "12:00:02", "12:00:03"]
        first = await store.get_job(running.id)
        assert first is not None and first.cancel_requested
        assert jobs["12:00:02"].status is JobStatus.CANCELLED
        assert jobs["12:00:03"].status is JobStatus.PENDING
        assert not jobs["12:00:03"].cancel_requested
    finally:
        await h.batching.close()


def test_the_policy_names_are_stroms() -> None:
    assert {p.value for p in SchedulerConcurrency} == {"allow", "skip", "cancel_previous"}
