"""Fixtures of the receiver suites: a harness per broker, a workspace, a running manager."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher
from headwater.store.base import JobFilter, JobRecord, Store
from headwater.triggers.receivers.manager import ReceiverManager
from headwater.workspace.models import Workspace
from headwater.workspace.templating import TemplateEngine
from tests.integration.receivers.harness import HARNESSES, ReceiverHarness

WS = "rcv"
TRIGGER = "incoming"
SOURCE_ID = f"{WS}/{TRIGGER}"
SECRETS = {"redis_url": "redis://127.0.0.1:6379/0"}


def workspace_with(trigger: dict[str, Any]) -> Workspace:
    return Workspace.model_validate(
        {
            "name": WS,
            "actions": {"noop": {"type": "script", "script": "true"}},
            "tasks": {
                "handle": {
                    "input": {
                        "payload": {"type": "object", "required": True},
                        "metadata": {"type": "object"},
                        "region": {"type": "string"},
                    },
                    "flow": {"run": {"action": "noop"}},
                }
            },
            "triggers": {TRIGGER: trigger},
        }
    )


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {result!r})")
        await asyncio.sleep(0.02)


@dataclass
class Rig:
    store: Store
    harness: ReceiverHarness
    trigger: dict[str, Any]
    dispatcher: Dispatcher | None = None
    manager: ReceiverManager | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def workspace(self) -> Workspace:
        return workspace_with(self.trigger)

    async def start(
        self, dispatcher: Dispatcher | None = None, *, default_backoff: bool = False
    ) -> ReceiverManager:
        """Run the manager; its restart backoff is shortened unless ``default_backoff``."""
        attach = getattr(self.harness, "attach", None)
        if attach is not None:  # a harness that reads the receiver's checkpoint
            attach(self.store)
        self.dispatcher = dispatcher or Dispatcher(self.store, self.workspace)
        self.stop = asyncio.Event()
        self.manager = ReceiverManager(
            self.store,
            self.dispatcher,
            self.workspace,
            TemplateEngine(),
            lambda: {**SECRETS, **getattr(self.harness, "secrets", dict)()},
            **({} if default_backoff else {"backoff_initial": 0.05, "backoff_max": 0.2}),
        )
        self.task = asyncio.create_task(self.manager.run(self.stop))
        manager = self.manager
        # Connecting can take more than 10 s on a loaded 2-core CI machine (seen with SQS).
        await eventually(lambda: _is_running(manager), timeout=30, what="the receiver to run")
        return manager

    async def halt(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
            self.task = None

    async def jobs(self) -> list[JobRecord]:
        return await self.store.list_jobs(JobFilter(source_id=SOURCE_ID, limit=10_000))

    async def wait_jobs(self, n: int, timeout: float = 10.0) -> list[JobRecord]:
        async def enough() -> list[JobRecord] | None:
            jobs = await self.jobs()
            assert len(jobs) <= n, f"{len(jobs)} jobs, more than {n}"
            return jobs if len(jobs) == n else None

        result: list[JobRecord] = await eventually(enough, timeout, what=f"{n} jobs")
        return result


async def _is_running(manager: ReceiverManager) -> bool:
    states = await manager.states()
    return states.get(TRIGGER, {}).get("state") == "running"


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[ReceiverHarness]:
    h: ReceiverHarness = HARNESSES[request.param]()
    await h.setup()
    try:
        yield h
    finally:
        await h.cleanup()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """The receivers' store is the ``db_url`` database (SQLite, PostgreSQL), not the
    contract's three backends: the crash tests reopen that database in a child process,
    and some files pin ``db_url`` to SQLite."""
    from headwater.store.sql import open_store

    st = await open_store(db_url)
    try:
        yield st
    finally:
        await st.close()


@pytest.fixture
async def rig(store: Store, harness: ReceiverHarness) -> AsyncIterator[Rig]:
    r = Rig(store, harness, harness.trigger())
    yield r
    await r.halt()  # an error stopping the receivers fails the test


# Receivers whose broker is a fake in this suite (no server of theirs runs on CI's
# machines). The store half of the contract (one job per message, ack after commit) is
# the same dispatcher code for every receiver and runs on PostgreSQL with each live
# broker; for these three it runs on SQLite only, which halves their share of CI time.
FAKE_BACKED = frozenset({"eventhubs", "pulsar", "sqlserver_cdc"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = str(config.rootpath / "tests" / "integration" / "receivers")
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_fake = params.get("harness") in FAKE_BACKED or params.get("kind") in FAKE_BACKED
        if str(item.path).startswith(here) and on_fake and params.get("db_url") == "postgres":
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
