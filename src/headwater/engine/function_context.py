"""What a ``type: function`` step's callable can know about the job it runs in.

The step runner sets ``CURRENT_FUNCTION`` around the call (a context variable: the
callable's thread or task sees it, nothing else does). Durable workflows
(``headwater.sdk.workflows``) read it to find their job, the store their records live in
and how to start other jobs; a workflow that must wait raises ``WorkflowSuspended`` and
the runner lets the job go instead of ending the step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from headwater.core.workflows import WorkflowStart
from headwater.store.base import InsertOutcome, JobRecord, Store

__all__ = ["CURRENT_FUNCTION", "FunctionJob", "StartJob", "WorkflowStart", "WorkflowSuspended"]


# Starts one through the node's Dispatcher (the one writer of jobs): the insert's outcome
# (not created: a run with that workflow id exists, and that is its job).
StartJob = Callable[[WorkflowStart], Awaitable[InsertOutcome]]


@dataclass(frozen=True, slots=True)
class FunctionJob:
    """The job a function step runs in, and the worker's means."""

    job: JobRecord
    step: str
    ref: str  # the function step's ``function`` ("module:callable")
    loop: asyncio.AbstractEventLoop  # the worker's loop (a sync callable runs in a thread)
    cancel: asyncio.Event  # set when the job is cancelled or timed out
    store: Store | None = None  # None: a remote worker (no store in this process)
    start_job: StartJob | None = None


CURRENT_FUNCTION: ContextVar[FunctionJob | None] = ContextVar("headwater_function", default=None)


class WorkflowSuspended(BaseException):
    """Raised by a workflow that waits (a sleep, a message, an event): its step becomes
    ``suspended`` and the worker lets the job go; the store requeues it when the wait is
    over. A BaseException so that a workflow's ``except Exception`` does not swallow it."""
