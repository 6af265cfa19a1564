"""The cron scheduler: next-time computation, dedup keys, catch-up, reloads, the loop."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from headwater.dispatch.dispatcher import DispatchStatus
from headwater.store.base import JobFilter, NewJob
from headwater.triggers.scheduler import (
    CronSchedule,
    Scheduler,
    parse_scheduled_time,
    scheduler_dedup_key,
)
from headwater.workspace.models import (
    Action,
    ActionType,
    InputField,
    SchedulerTrigger,
    Step,
    Task,
    Workspace,
)
from headwater.workspace.secret_refs import unseal
from tests.unit.test_scheduler_fakes import FakeTriggerContext

T0 = datetime(2025, 6, 2, 12, 0, 0, tzinfo=UTC)  # a Monday


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def cron_trigger(cron: str, **kw: Any) -> SchedulerTrigger:
    return SchedulerTrigger(type="scheduler", task=kw.pop("task", "report"), cron=cron, **kw)


def make_ws(triggers: dict[str, SchedulerTrigger], name: str = "ws") -> Workspace:
    return Workspace(
        name=name,
        actions={"echo": Action(type=ActionType.SCRIPT, script="echo hi")},
        tasks={
            "report": Task(
                input={"when": InputField(), "token": InputField(), "kind": InputField()},
                flow={"run": Step(action="echo")},
            ),
            "strict": Task(
                input={"n": InputField(type="integer", required=True)},
                flow={"run": Step(action="echo")},
            ),
        },
        triggers=triggers,
    )


@pytest.fixture
async def ctx() -> AsyncIterator[FakeTriggerContext]:
    c = FakeTriggerContext(make_ws({}), secrets={"token": "tok-123456"})
    yield c
    await c.close()


async def scheduler_jobs(c: FakeTriggerContext, source_id: str = "ws/tick") -> list[Any]:
    jobs = await c.store.list_jobs(JobFilter(source_type="scheduler", source_id=source_id))
    return sorted(jobs, key=lambda j: j.dedup_key)


# -- next-time computation -----------------------------------------------------------------


def test_five_fields_are_minute_hour_day_month_weekday() -> None:
    s = CronSchedule("*/15 * * * *")
    assert s.next_after(utc(2025, 6, 2, 10, 7, 30)) == utc(2025, 6, 2, 10, 15)
    assert CronSchedule("30 9 * * MON-FRI").next_after(utc(2025, 6, 7, 0, 0)) == utc(
        2025, 6, 9, 9, 30
    )


def test_six_fields_put_seconds_first() -> None:
    s = CronSchedule("*/10 * * * * *")
    assert s.next_after(utc(2025, 6, 2, 10, 0, 5)) == utc(2025, 6, 2, 10, 0, 10)
    assert CronSchedule("0 0 2 * * *").next_after(T0) == utc(2025, 6, 3, 2, 0, 0)


def test_next_is_strictly_after_a_tick() -> None:
    s = CronSchedule("* * * * * *")
    assert s.next_after(T0) == T0 + timedelta(seconds=1)
    assert s.next_after(T0 + timedelta(microseconds=1)) == T0 + timedelta(seconds=1)


def test_aliases() -> None:
    assert CronSchedule("@hourly").next_after(T0) == utc(2025, 6, 2, 13)
    assert CronSchedule("@daily").next_after(T0) == utc(2025, 6, 3)


def test_results_are_utc_whatever_the_input_zone() -> None:
    from zoneinfo import ZoneInfo

    nxt = CronSchedule("0 * * * *").next_after(T0.astimezone(ZoneInfo("Asia/Tokyo")))
    assert nxt == utc(2025, 6, 2, 13) and nxt.tzinfo is UTC


def test_timezone_follows_summer_and_winter_time() -> None:
    s = CronSchedule("0 9 * * *", "Europe/Oslo")
    assert s.next_after(utc(2025, 1, 15)) == utc(2025, 1, 15, 8)  # CET, UTC+1
    assert s.next_after(utc(2025, 7, 15)) == utc(2025, 7, 15, 7)  # CEST, UTC+2


def test_spring_forward_moves_a_tick_in_the_gap_to_its_end() -> None:
    # 2025-03-30 in Oslo: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    s = CronSchedule("30 2 * * *", "Europe/Oslo")
    ticks, _ = s.ticks_between(utc(2025, 3, 29, 0), utc(2025, 4, 1, 0), 10)
    assert ticks == [
        utc(2025, 3, 29, 1, 30),  # 02:30 CET
        utc(2025, 3, 30, 1, 0),  # 03:00 CEST, the end of the gap
        utc(2025, 3, 31, 0, 30),  # 02:30 CEST
    ]


def test_spring_forward_drops_wildcard_hour_ticks_in_the_gap() -> None:
    # 02:00 and 02:30 do not exist; every-30-minutes goes on at 03:00 CEST.
    s = CronSchedule("*/30 * * * *", "Europe/Oslo")
    ticks, _ = s.ticks_between(utc(2025, 3, 30, 0, 15), utc(2025, 3, 30, 1, 45), 10)
    assert ticks == [utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 0), utc(2025, 3, 30, 1, 30)]


def test_fall_back_fires_a_fixed_hour_once() -> None:
    # 2025-10-26 in Oslo: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    s = CronSchedule("30 2 * * *", "Europe/Oslo")
    ticks, _ = s.ticks_between(utc(2025, 10, 25, 0), utc(2025, 10, 28, 0), 10)
    assert ticks == [utc(2025, 10, 25, 0, 30), utc(2025, 10, 26, 0, 30), utc(2025, 10, 27, 1, 30)]
    assert s.next_after(utc(2025, 10, 26, 0, 30)) == utc(2025, 10, 27, 1, 30)


def test_fall_back_fires_wildcard_hours_in_both_passes() -> None:
    s = CronSchedule("*/30 * * * *", "Europe/Oslo")
    ticks, _ = s.ticks_between(utc(2025, 10, 25, 23, 45), utc(2025, 10, 26, 1, 45), 10)
    # Every 30 minutes of real time, through the repeated hour.
    assert ticks == [utc(2025, 10, 26, 0, 0) + timedelta(minutes=30 * i) for i in range(4)]
    # From inside the first pass (02:45 CEST) the next tick is 02:00 CET.
    assert s.next_after(utc(2025, 10, 26, 0, 45)) == utc(2025, 10, 26, 1, 0)


@pytest.mark.parametrize(
    ("cron", "tz", "message"),
    [
        ("* * *", "UTC", "has 3 fields"),
        ("61 * * * *", "UTC", "invalid cron"),
        ("* * * * *", "Europe/Olso", "did you mean"),
    ],
)
def test_invalid_schedules_are_refused(cron: str, tz: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CronSchedule(cron, tz)


def test_ticks_between_is_exclusive_inclusive_and_capped_to_the_newest() -> None:
    s = CronSchedule("* * * * * *")
    ticks, capped = s.ticks_between(T0, T0 + timedelta(seconds=3), 10)
    assert ticks == [T0 + timedelta(seconds=i) for i in (1, 2, 3)] and not capped
    ticks, capped = s.ticks_between(T0, T0 + timedelta(hours=1), 5)
    assert capped
    assert ticks == [T0 + timedelta(seconds=3600 - i) for i in (4, 3, 2, 1, 0)]
    assert s.ticks_between(T0, T0, 5) == ([], False)


def test_dedup_key_names_trigger_and_utc_time() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2025, 6, 2, 14, 0, 5, tzinfo=ZoneInfo("Europe/Oslo"))
    key = scheduler_dedup_key("ws", "nightly", local)
    assert key == "scheduler:ws/nightly:2025-06-02T12:00:05Z"
    assert parse_scheduled_time(key, "ws/nightly") == utc(2025, 6, 2, 12, 0, 5)
    assert parse_scheduled_time(key, "ws/other") is None
    assert parse_scheduled_time("scheduler:ws/nightly:garbage", "ws/nightly") is None
    assert parse_scheduled_time(None, "ws/nightly") is None


# -- one pass at a given time ----------------------------------------------------------------


async def test_fires_a_due_tick_with_rendered_defaults(ctx: FakeTriggerContext) -> None:
    inp = {"when": "{{ schedule.time }}", "token": "{{ secret.token }}", "kind": "cron"}
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *", input=inp)})
    sched = Scheduler(ctx)
    assert await sched.run_once(T0 + timedelta(seconds=30)) == []
    assert sched.next_fire_times() == {"tick": T0 + timedelta(minutes=1)}
    results = await sched.run_once(T0 + timedelta(minutes=1))
    assert [(r.trigger, r.scheduled, r.outcome.status) for r in results] == [
        ("tick", T0 + timedelta(minutes=1), DispatchStatus.ACCEPTED)
    ]
    (job,) = await scheduler_jobs(ctx)
    assert job.dedup_key == "scheduler:ws/tick:2025-06-02T12:01:00Z"
    assert (job.source_type, job.source_id, job.task) == ("scheduler", "ws/tick", "report")
    # The secret is stored as a reference the worker fills in.
    assert job.input["token"].startswith("⟦secret:token:")
    assert unseal(job.input, ctx.secrets(), job.source_id) == {
        "when": "2025-06-02T12:01:00Z",
        "token": "tok-123456",
        "kind": "cron",
    }
    assert sched.next_fire_times() == {"tick": T0 + timedelta(minutes=2)}


async def test_the_same_tick_twice_is_one_job(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("* * * * * *")})
    first, second = Scheduler(ctx), Scheduler(ctx)  # two processes on one store
    for s in (first, second):
        await s.run_once(T0)
    a = await first.run_once(T0 + timedelta(seconds=1))
    b = await second.run_once(T0 + timedelta(seconds=1))
    assert a[0].outcome.status is DispatchStatus.ACCEPTED
    assert b[0].outcome.status is DispatchStatus.DUPLICATE
    assert b[0].outcome.job_id == a[0].outcome.job_id
    assert len(await scheduler_jobs(ctx)) == 1


async def test_a_slightly_late_tick_still_fires(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *")})
    sched = Scheduler(ctx, tolerance=5.0)
    await sched.run_once(T0)
    results = await sched.run_once(T0 + timedelta(minutes=1, seconds=4))
    assert [r.scheduled for r in results] == [T0 + timedelta(minutes=1)]


async def test_a_tick_missed_by_more_than_the_tolerance_is_skipped(
    ctx: FakeTriggerContext,
) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *")})
    sched = Scheduler(ctx, tolerance=5.0)
    await sched.run_once(T0)
    with capture_logs() as logs:
        results = await sched.run_once(T0 + timedelta(minutes=3, seconds=2))
    # 12:01 and 12:02 are too late; 12:03 is 2 s late and fires.
    assert [r.scheduled for r in results] == [T0 + timedelta(minutes=3)]
    (warning,) = [e for e in logs if e["event"] == "scheduler_missed_ticks"]
    assert warning["skipped"] == 2 and warning["trigger"] == "tick"


async def test_catch_up_makes_ticks_up_while_running(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *", catch_up=True)})
    sched = Scheduler(ctx)
    await sched.run_once(T0)
    results = await sched.run_once(T0 + timedelta(minutes=3, seconds=30))
    assert [r.scheduled for r in results] == [T0 + timedelta(minutes=i) for i in (1, 2, 3)]


async def seed_fired(c: FakeTriggerContext, *ticks: datetime, trigger: str = "tick") -> None:
    await c.store.insert_jobs(
        [
            NewJob(
                workspace="ws",
                task="report",
                input={},
                source_type="scheduler",
                source_id=f"ws/{trigger}",
                dedup_key=scheduler_dedup_key("ws", trigger, t),
            )
            for t in ticks
        ]
    )


async def test_restart_with_catch_up_makes_up_from_the_last_fired_tick(
    ctx: FakeTriggerContext,
) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *", catch_up=True)})
    # Inserted out of order (two processes): the newest *scheduled* time counts.
    await seed_fired(ctx, T0, T0 - timedelta(minutes=1))
    results = await Scheduler(ctx).run_once(T0 + timedelta(minutes=4, seconds=10))
    assert [r.scheduled for r in results] == [T0 + timedelta(minutes=i) for i in (1, 2, 3, 4)]
    assert all(r.outcome.status is DispatchStatus.ACCEPTED for r in results)


async def test_restart_without_catch_up_skips_missed_ticks(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *")})
    await seed_fired(ctx, T0)
    sched = Scheduler(ctx)
    assert await sched.run_once(T0 + timedelta(minutes=4, seconds=10)) == []
    assert sched.next_fire_times()["tick"] == T0 + timedelta(minutes=5)


async def test_catch_up_of_a_trigger_that_never_fired_starts_now(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *", catch_up=True)})
    assert await Scheduler(ctx).run_once(T0 + timedelta(minutes=4, seconds=10)) == []


async def test_catch_up_counts_rejected_ticks_as_fired(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *", task="strict", catch_up=True)})
    sched = Scheduler(ctx)
    await sched.run_once(T0)
    results = await sched.run_once(T0 + timedelta(minutes=1))
    assert results[0].outcome.status is DispatchStatus.REJECTED
    assert "n" in (results[0].outcome.reason or "")
    (rejected,) = ctx.store.rejected
    assert rejected.dedup_key == "scheduler:ws/tick:2025-06-02T12:01:00Z"
    # A restart two minutes later makes up 12:02 and 12:03 only.
    results = await Scheduler(ctx).run_once(T0 + timedelta(minutes=3))
    assert [r.scheduled for r in results] == [T0 + timedelta(minutes=2), T0 + timedelta(minutes=3)]


async def test_catch_up_is_capped_with_a_warning(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("* * * * * *", catch_up=True)})
    await seed_fired(ctx, T0)
    with capture_logs() as logs:
        results = await Scheduler(ctx, max_catch_up=5).run_once(T0 + timedelta(hours=1))
    # The newest five: the gap is one contiguous stretch at the old end.
    assert [r.scheduled for r in results] == [
        T0 + timedelta(hours=1) - timedelta(seconds=i) for i in (4, 3, 2, 1, 0)
    ]
    (warning,) = [e for e in logs if e["event"] == "scheduler_catch_up_capped"]
    assert warning["made_up"] == 5 and warning["log_level"] == "warning"


async def test_an_input_template_error_stores_a_rejected_tick(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *", input={"kind": "{{ secret.nope }}"})})
    sched = Scheduler(ctx)
    await sched.run_once(T0)
    assert await sched.run_once(T0 + timedelta(minutes=1)) == []
    (rejected,) = ctx.store.rejected
    assert rejected.source_type == "scheduler" and "nope" in rejected.reason
    assert await scheduler_jobs(ctx) == []


async def test_a_failed_insert_leaves_the_tick_due(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *")})
    sched = Scheduler(ctx)
    await sched.run_once(T0)
    ctx.store.fail_inserts = 1
    with pytest.raises(ConnectionError):
        await sched.run_once(T0 + timedelta(minutes=1))
    results = await sched.run_once(T0 + timedelta(minutes=1, seconds=1))
    assert [r.scheduled for r in results] == [T0 + timedelta(minutes=1)]


# -- workspace reloads -------------------------------------------------------------------------


async def test_reload_adds_removes_disables_and_reschedules(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"a": cron_trigger("0 * * * * *"), "b": cron_trigger("0 0 * * * *")})
    sched = Scheduler(ctx)
    await sched.run_once(T0)
    assert sched.next_fire_times() == {"a": utc(2025, 6, 2, 12, 1), "b": utc(2025, 6, 2, 13)}
    ctx.ws = make_ws(
        {
            "a": cron_trigger("0 * * * * *", enabled=False),
            "b": cron_trigger("*/10 * * * * *"),  # changed: rescheduled from now
            "c": cron_trigger("30 * * * * *"),  # new
        }
    )
    await sched.run_once(T0 + timedelta(seconds=5))
    assert sched.next_fire_times() == {
        "a": None,
        "b": T0 + timedelta(seconds=10),
        "c": T0 + timedelta(seconds=30),
    }
    assert sched.trigger_states() == {
        "a": {"state": "disabled", "next_fire_at": None},
        "b": {"state": "scheduled", "next_fire_at": "2025-06-02T12:00:10Z"},
        "c": {"state": "scheduled", "next_fire_at": "2025-06-02T12:00:30Z"},
    }
    results = await sched.run_once(T0 + timedelta(seconds=30))
    assert {(r.trigger, r.scheduled) for r in results} == {
        ("b", T0 + timedelta(seconds=30)),
        ("c", T0 + timedelta(seconds=30)),
    }
    ctx.ws = make_ws({"c": cron_trigger("30 * * * * *")})
    await sched.run_once(T0 + timedelta(minutes=1, seconds=1))
    assert sched.next_fire_times() == {"c": T0 + timedelta(minutes=1, seconds=30)}


async def test_an_unchanged_trigger_keeps_its_schedule_and_takes_the_new_input(
    ctx: FakeTriggerContext,
) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *", input={"kind": "old"})})
    sched = Scheduler(ctx)
    await sched.run_once(T0)
    ctx.ws = make_ws({"tick": cron_trigger("0 * * * * *", input={"kind": "new"})})
    await sched.run_once(T0 + timedelta(minutes=1))
    (job,) = await scheduler_jobs(ctx)
    assert job.input["kind"] == "new"


async def test_a_never_matching_cron_is_never_due(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"feb30": cron_trigger("0 0 30 2 *")})
    sched = Scheduler(ctx)
    with capture_logs() as logs:
        assert await sched.run_once(T0) == []
    assert sched.next_fire_times() == {"feb30": None}
    assert sched.trigger_states() == {"feb30": {"state": "never_due", "next_fire_at": None}}
    assert any(e["event"] == "scheduler_never_due" for e in logs)


# -- the loop ------------------------------------------------------------------------------------


async def run_for(sched: Scheduler, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 1.0)


async def test_a_per_second_cron_fires_every_tick_once(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("* * * * * *")})
    await run_for(Scheduler(ctx), 2.6)
    times = [parse_scheduled_time(j.dedup_key, "ws/tick") for j in await scheduler_jobs(ctx)]
    assert 2 <= len(times) <= 3
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))


async def test_stop_ends_a_long_sleep_at_once(ctx: FakeTriggerContext) -> None:
    sched = Scheduler(ctx, max_sleep=60.0)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 0.5)


async def test_wake_picks_up_a_reloaded_workspace_at_once(ctx: FakeTriggerContext) -> None:
    sched = Scheduler(ctx, max_sleep=60.0)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run(stop))
    await asyncio.sleep(0.05)
    ctx.ws = make_ws({"tick": cron_trigger("* * * * * *")})
    sched.wake()
    await asyncio.sleep(1.2)
    stop.set()
    await asyncio.wait_for(task, 1.0)
    assert len(await scheduler_jobs(ctx)) >= 1


async def test_the_loop_survives_a_store_failure(ctx: FakeTriggerContext) -> None:
    ctx.ws = make_ws({"tick": cron_trigger("* * * * * *", catch_up=True)})
    ctx.store.fail_inserts = 1
    with capture_logs() as logs:
        await run_for(Scheduler(ctx), 2.2)
    assert any(e["event"] == "scheduler_error" for e in logs)
    # The failed tick was kept due and made up after the 1 s backoff.
    times = [parse_scheduled_time(j.dedup_key, "ws/tick") for j in await scheduler_jobs(ctx)]
    assert len(times) >= 2
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))
