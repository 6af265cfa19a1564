"""Strøm's `force_refresh` on scheduler and webhook triggers: the job is made from the
workspace as its files are now (the refresh), not as the watcher last loaded it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from headwater.dispatch.dispatcher import BatchingDispatcher, Dispatcher
from headwater.errors import ConfigError
from headwater.server.app import create_app
from headwater.server.routes_webhooks import create_webhook_router
from headwater.store.base import JobFilter, Store
from headwater.store.sql import open_store
from headwater.triggers.context import CallbackTriggerContext
from headwater.triggers.scheduler import Scheduler
from headwater.workspace.models import (
    Action,
    ActionType,
    InputField,
    SchedulerTrigger,
    Step,
    Task,
    WebhookTrigger,
    Workspace,
)
from headwater.workspace.templating import TemplateEngine

T0 = datetime(2025, 6, 2, 12, 0, 0, tzinfo=UTC)


def make_ws(version: str, force_refresh: bool) -> Workspace:
    """The workspace as edited to ``version`` (the task's input default says which)."""
    return Workspace(
        name="ws",
        actions={"echo": Action(type=ActionType.SCRIPT, script="echo hi")},
        tasks={
            "report": Task(
                input={"v": InputField(default=version)}, flow={"s": Step(action="echo")}
            )
        },
        triggers={
            "tick": SchedulerTrigger(
                type="scheduler", task="report", cron="* * * * * *", force_refresh=force_refresh
            ),
            "hook": WebhookTrigger(type="webhook", task="report", force_refresh=force_refresh),
        },
    )


class Files:
    """The workspace on disk (``edit``) and the one loaded (``loaded``), as in a Node."""

    def __init__(self, force_refresh: bool) -> None:
        self.force_refresh = force_refresh
        self.loaded = make_ws("v1", force_refresh)
        self.on_disk: Workspace | None = self.loaded
        self.refreshes = 0

    def edit(self, version: str | None) -> None:
        self.on_disk = None if version is None else make_ws(version, self.force_refresh)

    async def refresh(self) -> None:
        self.refreshes += 1
        if self.on_disk is None:
            raise ConfigError("broken edit")
        self.loaded = self.on_disk


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await open_store(db_url)
    yield s
    await s.close()


def context(store: Store, files: Files) -> tuple[CallbackTriggerContext, BatchingDispatcher]:
    dispatcher = BatchingDispatcher(Dispatcher(store, lambda: files.loaded))
    ctx = CallbackTriggerContext(
        store=store,
        dispatcher=dispatcher,
        templates=TemplateEngine(),
        workspace=lambda: files.loaded,
        secrets=dict,
        refresh=files.refresh,
    )
    return ctx, dispatcher


async def inputs(store: Store, source_type: str) -> list[Any]:
    jobs = await store.list_jobs(JobFilter(source_type=source_type))
    return sorted(j.input["v"] for j in jobs)


@pytest.mark.parametrize("force_refresh", [True, False])
async def test_scheduler_tick_uses_the_files_as_they_are(store: Store, force_refresh: bool) -> None:
    files = Files(force_refresh)
    ctx, dispatcher = context(store, files)
    try:
        scheduler = Scheduler(ctx)
        await scheduler.run_once(T0)
        files.edit("v2")
        await scheduler.run_once(T0 + timedelta(seconds=1))
        files.edit(None)  # a broken edit: the loaded workspace stays in force
        await scheduler.run_once(T0 + timedelta(seconds=2))
    finally:
        await dispatcher.close()
    if force_refresh:
        assert await inputs(store, "scheduler") == ["v2", "v2"]
        assert files.refreshes == 2
    else:
        assert await inputs(store, "scheduler") == ["v1", "v1"]
        assert files.refreshes == 0


@pytest.mark.parametrize("force_refresh", [True, False])
async def test_webhook_uses_the_files_as_they_are(store: Store, force_refresh: bool) -> None:
    files = Files(force_refresh)
    ctx, dispatcher = context(store, files)

    class Runtime:
        def __init__(self) -> None:
            self.store = store

        def workspace(self) -> Workspace:
            return files.loaded

        def health(self) -> dict[str, str]:
            return {"worker": "disabled"}

    app = create_app(Runtime())  # type: ignore[arg-type]
    app.include_router(create_webhook_router(ctx))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
            files.edit("v2")
            assert (await client.post("/hooks/hook", json={})).status_code == 202
            files.edit(None)
            assert (await client.post("/hooks/hook", json={})).status_code == 202
    finally:
        await dispatcher.close()
    want = ["v2", "v2"] if force_refresh else ["v1", "v1"]
    assert await inputs(store, "webhook") == want
    assert files.refreshes == (2 if force_refresh else 0)
