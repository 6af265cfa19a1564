"""The scheduler on the real store, SQLite and PostgreSQL: ticks, two processes, restarts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from headwater.dispatch.dispatcher import BatchingDispatcher, Dispatcher, DispatchStatus
from headwater.store.base import JobFilter, JobRecord, Store
from headwater.store.sql import open_store
from headwater.triggers.context import CallbackTriggerContext
from headwater.triggers.scheduler import Scheduler, parse_scheduled_time
from headwater.workspace.models import (
    Action,
    ActionType,
    InputField,
    SchedulerTrigger,
    Step,
    Task,
    Workspace,
)
from headwater.workspace.templating import TemplateEngine

T0 = datetime(2025, 6, 2, 12, 0, 0, tzinfo=UTC)


def make_ws(cron: str = "* * * * * *", catch_up: bool = False) -> Workspace:
    return Workspace(
        name="ws",
        actions={"echo": Action(type=ActionType.SCRIPT, script="echo hi")},
        tasks={
            "report": Task(input={"at": InputField()}, flow={"run": Step(action="echo")}),
        },
        triggers={
            "tick": SchedulerTrigger(
                type="scheduler",
                task="report",
                cron=cron,
                catch_up=catch_up,
                input={"at": "{{ schedule.time }}"},
            )
        },
    )


class Process:
    """What one headwater process has: its own store instance, dispatcher and context."""

    def __init__(self, store: Store, workspace: Callable[[], Workspace]) -> None:
        self.store = store
        self.dispatcher = BatchingDispatcher(Dispatcher(store, workspace))
        self.ctx = CallbackTriggerContext(
            store=store,
            dispatcher=self.dispatcher,
            templates=TemplateEngine(),
            workspace=workspace,
            secrets=dict,
        )

        self.closed = False

    def scheduler(self, **kw: Any) -> Scheduler:
        return Scheduler(self.ctx, **kw)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.dispatcher.close()
            await self.store.close()


Opener = Callable[[Callable[[], Workspace]], Awaitable[Process]]


@pytest.fixture
async def processes(db_url: str) -> AsyncIterator[Opener]:
    """Opens "processes" on the test's database (each with its own store instance)."""
    made: list[Process] = []

    async def opener(workspace: Callable[[], Workspace]) -> Process:
        proc = Process(await open_store(db_url), workspace)
        made.append(proc)
        return proc

    yield opener
    for proc in made:
        await proc.close()


async def tick_jobs(store: Store) -> list[JobRecord]:
    jobs = await store.list_jobs(JobFilter(source_type="scheduler", source_id="ws/tick"))
    return sorted(jobs, key=lambda j: j.dedup_key or "")


def ticks_of(jobs: list[JobRecord]) -> list[datetime]:
    times = [parse_scheduled_time(j.dedup_key, "ws/tick") for j in jobs]
    assert None not in times
    return times  # type: ignore[return-value]


async def run_for(schedulers: list[Scheduler], seconds: float) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in schedulers]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 2.0)


async def test_a_per_second_cron_fires_each_tick_once(processes: Opener) -> None:
    proc = await processes(make_ws)
    await run_for([proc.scheduler()], 2.5)
    jobs = await tick_jobs(proc.store)
    times = ticks_of(jobs)
    assert 2 <= len(times) <= 3
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))
    assert [j.input["at"] for j in jobs] == [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times]


async def test_two_processes_create_one_job_per_tick(processes: Opener) -> None:
    first, second = await processes(make_ws), await processes(make_ws)
    await run_for([first.scheduler(), second.scheduler()], 2.5)
    times = ticks_of(await tick_jobs(first.store))
    assert 2 <= len(times) <= 3
    assert len(set(times)) == len(times)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))


async def test_the_same_tick_from_two_processes_is_one_job(processes: Opener) -> None:
    first, second = await processes(make_ws), await processes(make_ws)
    a, b = first.scheduler(), second.scheduler()
    for s in (a, b):
        await s.run_once(T0)
    both = await asyncio.gather(
        a.run_once(T0 + timedelta(seconds=1)), b.run_once(T0 + timedelta(seconds=1))
    )
    statuses = sorted(r[0].outcome.status for r in both)
    assert statuses == [DispatchStatus.ACCEPTED, DispatchStatus.DUPLICATE]
    assert both[0][0].outcome.job_id == both[1][0].outcome.job_id


@pytest.mark.parametrize("catch_up", [True, False])
async def test_a_restart_makes_up_missed_ticks_only_with_catch_up(
    processes: Opener, catch_up: bool
) -> None:
    def ws() -> Workspace:
        return make_ws(catch_up=catch_up)

    before = await processes(ws)
    sched = before.scheduler()
    await sched.run_once(T0)
    await sched.run_once(T0 + timedelta(seconds=1))
    await before.close()  # the process goes away for a few seconds
    after = await processes(ws)
    results = await after.scheduler().run_once(T0 + timedelta(seconds=5, milliseconds=300))
    made_up = [T0 + timedelta(seconds=i) for i in (2, 3, 4, 5)]
    assert [r.scheduled for r in results] == (made_up if catch_up else [])
    expected = [T0 + timedelta(seconds=1), *(made_up if catch_up else [])]
    assert ticks_of(await tick_jobs(after.store)) == expected
