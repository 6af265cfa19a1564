"""A status read of the receivers (``headwater triggers``, /metrics, a test waiting for
"running") answers even when a broker's lag question never does: the lag is then
unknown, the rest of the state is there."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher
from headwater.testing import InMemoryStore
from headwater.triggers.receivers import manager as manager_module
from headwater.triggers.receivers.base import EventReceiver, ReceiverContext, ReceiverLag
from headwater.triggers.receivers.manager import ReceiverManager
from headwater.workspace.models import Workspace
from headwater.workspace.templating import TemplateEngine
from tests.polling import eventually, join

WORKSPACE = Workspace.model_validate(
    {
        "name": "ws",
        "actions": {"noop": {"type": "script", "script": "true"}},
        "tasks": {"handle": {"flow": {"run": {"action": "noop"}}}},
        "triggers": {
            "incoming": {
                "type": "redis_list",
                "target_task": "handle",
                "url": "redis://127.0.0.1:1/0",
                "list": "never-read",
            }
        },
    }
)


class _StuckLag(EventReceiver):
    """Consumes nothing; its lag question hangs, as a client retrying a dead
    connection does."""

    trigger_type = "redis_list"

    def __init__(self) -> None:
        self._done = asyncio.Event()
        self.asked = 0

    async def start(self, ctx: ReceiverContext) -> None:
        pass

    async def stop(self) -> None:
        self._done.set()

    async def wait(self) -> None:
        await self._done.wait()

    def describe(self) -> dict[str, Any]:
        return {"type": self.trigger_type}

    async def lag(self) -> ReceiverLag | None:
        self.asked += 1
        await asyncio.Event().wait()  # never answers
        return None


async def test_a_lag_that_never_answers_leaves_the_lag_unknown_not_the_status_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(manager_module, "_LAG_TIMEOUT_SECS", 0.2)
    receiver = _StuckLag()
    store = InMemoryStore()
    manager = ReceiverManager(
        store,
        Dispatcher(store, lambda: WORKSPACE),
        lambda: WORKSPACE,
        TemplateEngine(),
        dict,
        factory=lambda *_: receiver,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(manager.run(stop))
    try:
        await eventually(lambda: manager._slots.get("incoming"), what="the receiver slot")
        state = (await asyncio.wait_for(manager.states(), 10))["incoming"]
    finally:
        stop.set()
        await join([running])
    assert receiver.asked == 1
    assert state["state"] == "running"
    assert (state["lag_events"], state["lag_pending"], state["lag_ms"]) == (None, None, None)
