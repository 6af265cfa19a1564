"""``WorkflowClient``: start workflows, send them messages and read their events from
code that is not a job (a script, a web app, a test)::

    async with headwater.WorkflowClient("postgresql://…/headwater") as client:
        handle = await client.start(checkout, order_id=7, workflow_id="order-7")
        print(await handle.result_async(timeout=60))

Inside ``async with`` the module-level functions (``start_workflow_async``,
``send_async``, ``get_event_async``, ``handle.result_async``) use it too. It writes jobs
through a ``Dispatcher`` over the registry's workspace (the workflows' tasks), as every
other job is written; the workers run them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import Token
from typing import Any

from headwater.core.workflows import WorkflowStart
from headwater.dispatch.dispatcher import Dispatcher, workflow_event
from headwater.errors import NotFoundError
from headwater.sdk.registry import Registry, default_registry
from headwater.sdk.workflows.backend import CLIENT, Backend
from headwater.sdk.workflows.definitions import start_workflow_async
from headwater.sdk.workflows.handles import WorkflowHandle
from headwater.sdk.workflows.primitives import get_event_async, send_async
from headwater.store.base import InsertOutcome, Store
from headwater.store.sql import open_store

__all__ = ["WorkflowClient"]


class WorkflowClient:
    """A connection to headwater's store for starting and talking to workflows."""

    def __init__(
        self,
        db_url: str | None = None,
        registry: Registry | None = None,
        *,
        store: Store | None = None,
    ) -> None:
        """``db_url``: headwater's database; or ``store``, one already open (kept open)."""
        if (db_url is None) == (store is None):
            raise ValueError("give WorkflowClient a db_url or a store")
        self._url = db_url
        self._registry = registry
        self._given = store
        self._store: Store | None = None
        self._token: Token[Backend | None] | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("use the WorkflowClient inside `async with`")
        return self._store

    async def __aenter__(self) -> WorkflowClient:
        self._store = self._given or await open_store(str(self._url))
        registry = self._registry if self._registry is not None else default_registry()
        workspace = registry.workspace()
        dispatcher = Dispatcher(self._store, lambda: workspace)

        async def start_job(start: WorkflowStart) -> InsertOutcome:
            return await dispatcher.submit(workflow_event(start))

        self._token = CLIENT.set(Backend(self._store, start_job, asyncio.get_running_loop()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            CLIENT.reset(self._token)
            self._token = None
        if self._store is not None and self._given is None:
            await self._store.close()
        self._store = None

    async def start(
        self, fn: Callable[..., Any], *args: Any, workflow_id: str | None = None, **kwargs: Any
    ) -> WorkflowHandle:
        return await start_workflow_async(fn, *args, workflow_id=workflow_id, **kwargs)

    async def handle(self, workflow_id: str) -> WorkflowHandle:
        job = await self.store.find_workflow(workflow_id)
        if job is None:
            raise NotFoundError(f"no workflow {workflow_id!r}")
        return WorkflowHandle(workflow_id, job.id)

    async def send(self, workflow_id: str, topic: str, message: Any) -> None:
        await send_async(workflow_id, topic, message)

    async def get_event(self, workflow_id: str, key: str, timeout: float | None = 60.0) -> Any:
        return await get_event_async(workflow_id, key, timeout)
