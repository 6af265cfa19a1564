"""A paused cron trigger fires no ticks and goes on from the next one when resumed; the
paused-trigger view wakes its listeners only when the stored set changes."""

from __future__ import annotations

from datetime import timedelta

from headwater.store.base import PauseKind
from headwater.testing import InMemoryStore
from headwater.triggers.pause import PausedTriggers
from headwater.triggers.scheduler import Scheduler
from tests.unit.test_scheduler import T0, cron_trigger, make_ws, scheduler_jobs
from tests.unit.test_scheduler_fakes import FakeTriggerContext


async def test_a_paused_cron_trigger_fires_nothing_and_resumes_at_the_next_tick() -> None:
    ctx = FakeTriggerContext(make_ws({"tick": cron_trigger("0 * * * * *")}))
    paused = {"tick"}
    sched = Scheduler(ctx, paused=lambda name: name in paused)
    try:
        assert await sched.run_once(T0) == []
        assert sched.trigger_states()["tick"] == {"state": "paused", "next_fire_at": None}
        assert await sched.run_once(T0 + timedelta(minutes=3)) == []
        assert await scheduler_jobs(ctx) == []

        paused.clear()
        assert await sched.run_once(T0 + timedelta(minutes=3, seconds=1)) == []  # no make-up
        assert sched.trigger_states()["tick"]["state"] == "scheduled"
        fired = await sched.run_once(T0 + timedelta(minutes=4))
        assert [r.scheduled for r in fired] == [T0 + timedelta(minutes=4)]
    finally:
        await ctx.close()


async def test_the_view_follows_the_store_and_wakes_listeners_on_change() -> None:
    store = InMemoryStore()
    view = PausedTriggers(store)
    woken: list[int] = []
    view.on_change(lambda: woken.append(1))
    assert await view.refresh() is False
    await store.set_paused(PauseKind.TRIGGER, "a", True)
    await store.set_paused(PauseKind.TASK, "a-task", True)  # not a trigger: ignored
    assert await view.refresh() is True
    assert view("a") and not view("b") and view.names == {"a"}
    assert await view.refresh() is False
    await store.set_paused(PauseKind.TRIGGER, "a", False)
    assert await view.refresh() is True
    assert not view("a")
    assert woken == [1, 1]
