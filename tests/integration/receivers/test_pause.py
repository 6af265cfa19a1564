"""A paused receiver trigger stops reading: messages stay in the broker until resumed."""

from __future__ import annotations

import asyncio

import pytest

from headwater.dispatch.dispatcher import Dispatcher
from headwater.store.base import PauseKind
from headwater.triggers.pause import PausedTriggers
from headwater.triggers.receivers.manager import ReceiverManager
from headwater.workspace.templating import TemplateEngine
from tests.integration.receivers.conftest import SECRETS, TRIGGER, Rig, eventually
from tests.polling import stays_true_for

pytestmark = pytest.mark.parametrize("harness", ["redis_list"], indirect=True)


async def test_a_paused_receiver_leaves_messages_in_the_list_and_reads_them_on_resume(
    rig: Rig,
) -> None:
    # The manager learns of the pause from the store alone (as another server would).
    paused = PausedTriggers(rig.store, interval=0.05)
    manager = ReceiverManager(
        rig.store,
        Dispatcher(rig.store, rig.workspace),
        rig.workspace,
        TemplateEngine(),
        lambda: SECRETS,
        backoff_initial=0.05,
        backoff_max=0.2,
        paused=paused,
    )
    paused.on_change(manager.wake)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(manager.run(stop)), asyncio.create_task(paused.run(stop))]
    try:

        async def phase(name: str) -> bool:
            return (await manager.states())[TRIGGER]["state"] == name

        await eventually(lambda: phase("running"), timeout=30, what="the receiver to run")
        await rig.harness.publish([{"n": 1}, {"n": 2}])
        await rig.wait_jobs(2)

        assert await rig.store.set_paused(PauseKind.TRIGGER, TRIGGER, True)
        await eventually(lambda: phase("paused"), what="the receiver to stop")
        await rig.harness.publish([{"n": 3}, {"n": 4}, {"n": 5}])

        async def untouched() -> bool:
            waiting = await rig.harness.undelivered() == 3
            return waiting and len(await rig.jobs()) == 2

        await stays_true_for(untouched, 0.6, what="the 3 messages waiting in the list")

        assert await rig.store.set_paused(PauseKind.TRIGGER, TRIGGER, False)
        jobs = await rig.wait_jobs(5)
        assert sorted(j.input["payload"]["n"] for j in jobs) == [1, 2, 3, 4, 5]
        await eventually(lambda: _drained(rig), what="the list and the processing list emptied")
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _drained(rig: Rig) -> bool:
    return await rig.harness.undelivered() == 0 and await rig.harness.unacked() == 0
