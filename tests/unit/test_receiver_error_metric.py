"""A receiver that fails is counted in ``headwater_receiver_errors_total{trigger}``."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from headwater.dispatch.dispatcher import Dispatcher
from headwater.telemetry.job_metrics import JobMetrics
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


def _broken_factory(*_: Any) -> Any:
    raise ConnectionError("the broker is down")


async def test_each_receiver_failure_is_counted_by_trigger() -> None:
    metrics = JobMetrics()
    registry = CollectorRegistry()
    metrics.register(registry)
    store: Any = None  # never reached: the receiver fails before it touches the store
    manager = ReceiverManager(
        store,
        Dispatcher(store, lambda: WORKSPACE),
        lambda: WORKSPACE,
        TemplateEngine(),
        dict,
        factory=_broken_factory,
        backoff_initial=0.01,
        backoff_max=0.02,
        on_error=metrics.receiver_error,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(manager.run(stop))
    try:

        def failures() -> float:
            value = registry.get_sample_value(
                "headwater_receiver_errors_total", {"trigger": "incoming"}
            )
            return value or 0.0

        await eventually(lambda: failures() >= 2, what="two failures counted")
    finally:
        stop.set()
        await join([running])
