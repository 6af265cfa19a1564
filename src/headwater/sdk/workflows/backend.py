"""Where a workflow call outside a workflow run finds the store and a job starter: the
function step it runs in (an embedded worker), else the ``WorkflowClient`` opened in
this task (``async with WorkflowClient(url): ...``)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from headwater.engine.function_context import CURRENT_FUNCTION, StartJob
from headwater.errors import WorkflowError
from headwater.sdk.workflows.runtime import on_loop
from headwater.store.base import Store

__all__ = ["CLIENT", "Backend", "backend", "backend_store", "sync_call"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backend:
    store: Store
    start_job: StartJob
    loop: asyncio.AbstractEventLoop


CLIENT: ContextVar[Backend | None] = ContextVar("headwater_workflow_client", default=None)

_NO_BACKEND = (
    "no headwater store here: call this inside a job on an embedded worker (headwater up,"
    " headwater server --worker, headwater consumer run) or inside"
    " `async with headwater.WorkflowClient(db_url):`"
)


def backend() -> Backend:
    fjob = CURRENT_FUNCTION.get()
    if fjob is not None and fjob.store is not None and fjob.start_job is not None:
        return Backend(fjob.store, fjob.start_job, fjob.loop)
    client = CLIENT.get()
    if client is not None:
        return client
    raise WorkflowError(_NO_BACKEND)


def backend_store() -> Store:
    return backend().store


def sync_call(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the backend's loop from this (other) thread."""
    try:
        found = backend()
    except WorkflowError:
        coro.close()
        raise
    return on_loop(found.loop, coro)
