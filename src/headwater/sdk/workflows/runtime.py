"""A workflow run's replay state, and the bridge from a sync workflow's thread.

A workflow's job runs its function from the top every time a worker picks it up. Each
durable call (a step, a transaction, a sleep, a message, an event, a child workflow)
takes the next sequence number; a call whose number is recorded already returns the
record instead of running (``next`` checks that its kind and name are the recorded
ones: anything else is a non-deterministic workflow, which fails).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

from headwater.core.workflows import WorkflowStep, WorkflowStepKind
from headwater.engine.function_context import CURRENT_FUNCTION, FunctionJob, StartJob
from headwater.errors import NonDeterministicWorkflowError, WorkflowError
from headwater.store.base import Store

__all__ = [
    "RUN",
    "WorkflowCancelledError",
    "WorkflowRun",
    "current_run",
    "function_job",
    "now",
    "on_loop",
]

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


class WorkflowCancelledError(BaseException):
    """The job was cancelled (or timed out): the run stops at its next durable call. A
    BaseException so that a workflow's ``except Exception`` does not swallow it."""


class WorkflowRun:
    """One execution of a workflow's function inside its job."""

    def __init__(
        self,
        fjob: FunctionJob,
        name: str,
        records: list[WorkflowStep],
        store: Store,
        *,
        threaded: bool,
    ) -> None:
        self.job_id = fjob.job.id
        self.workflow_id = fjob.job.dedup_key or fjob.job.id
        self.name = name
        self.store = store
        self.loop = fjob.loop
        self.cancel = fjob.cancel
        self.start_job: StartJob | None = fjob.start_job
        self.threaded = threaded  # a sync workflow, in a worker thread
        self.records: Mapping[int, WorkflowStep] = {r.seq: r for r in records}
        self.seq = 0
        self.in_step = False  # inside a step's body: no durable calls there
        self.broken: NonDeterministicWorkflowError | None = None

    def next(self, kind: WorkflowStepKind, name: str) -> tuple[int, WorkflowStep | None]:
        """The next call's sequence number and its record (None: not run yet)."""
        if self.cancel.is_set():
            raise WorkflowCancelledError("the job was cancelled")
        if self.in_step:
            raise WorkflowError(
                f"{kind.value} {name!r} called inside a step: a step's body is not replayed,"
                " so durable calls belong in the workflow function"
            )
        if self.broken is not None:
            raise self.broken
        seq = self.seq
        self.seq += 1
        record = self.records.get(seq)
        if record is not None and (record.kind is not kind or record.name != name):
            self.broken = NonDeterministicWorkflowError(
                f"workflow {self.name!r} ({self.workflow_id}) is not deterministic: call #{seq}"
                f" is {kind.value} {name!r} but the recorded run made {record.kind.value}"
                f" {record.name!r} there (the code, or something it reads, changed between"
                " runs)"
            )
            raise self.broken
        return seq, record

    def check_end(self) -> None:
        """At the function's end: the run made every recorded call."""
        if self.broken is not None:
            raise self.broken
        extra = sorted(seq for seq in self.records if seq >= self.seq)
        if extra:
            first = self.records[extra[0]]
            self.broken = NonDeterministicWorkflowError(
                f"workflow {self.name!r} ({self.workflow_id}) is not deterministic: it"
                f" returned after {self.seq} calls, but the recorded run made"
                f" {first.kind.value} {first.name!r} as call #{first.seq}"
            )
            raise self.broken

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the worker's loop from the workflow's thread and wait."""
        if not self.threaded:
            coro.close()
            raise WorkflowError(
                "a sync headwater call inside an async workflow: use its _async form"
                " (await headwater.sleep_async(...), recv_async, ...)"
            )
        return on_loop(self.loop, coro)


def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``loop`` (another thread's) and wait for it here."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise WorkflowError("a sync headwater call on the event loop: use its _async form")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


RUN: ContextVar[WorkflowRun | None] = ContextVar("headwater_workflow_run", default=None)


def current_run() -> WorkflowRun | None:
    return RUN.get()


def function_job() -> FunctionJob | None:
    return CURRENT_FUNCTION.get()
