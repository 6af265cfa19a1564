"""``@headwater.step`` and ``@headwater.transaction``: the recorded calls of a workflow.

A step runs at most ``1 + retries`` times (waiting ``backoff`` seconds, doubling up to
``max_backoff``, between attempts); its output (JSON) or its last error is recorded, and
a replay returns that record. Outside a workflow a step is a plain call.

A transaction step gets a session of headwater's own database: its writes and its
record commit in one transaction, so they happen exactly once however often the
workflow is replayed. A plain step's side effects happen at least once (a crash after
the side effect and before the record runs it again); its record exactly once.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from headwater import jsonsafe
from headwater.core.workflows import WorkflowStep, WorkflowStepKind
from headwater.errors import JsonValueError, StepFailedError
from headwater.sdk.workflows.runtime import RUN, WorkflowRun, now

__all__ = ["StepDef", "make_step"]

log = structlog.get_logger(__name__)
job_log = logging.getLogger("headwater.workflow")


@dataclass(frozen=True, slots=True)
class StepDef:
    name: str
    retries: int = 0
    backoff: float = 1.0
    max_backoff: float = 60.0
    transaction: bool = False

    def delay(self, failures: int) -> float:
        return float(min(self.backoff * 2 ** (failures - 1), self.max_backoff))

    @property
    def kind(self) -> WorkflowStepKind:
        return WorkflowStepKind.TRANSACTION if self.transaction else WorkflowStepKind.STEP


def _replayed(definition: StepDef, record: WorkflowStep) -> Any:
    if record.failed:
        raise StepFailedError(definition.name, record.error or "failed")
    return record.output


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _checked(value: Any) -> Any:
    jsonsafe.check_value(value)  # a record must be storable (JSON)
    return value


def _done(seq: int, definition: StepDef, started: Any, attempts: int, value: Any) -> WorkflowStep:
    return WorkflowStep(
        seq, definition.name, definition.kind, "completed", value, None, attempts, started, now()
    )


def _failed(seq: int, definition: StepDef, started: Any, attempts: int, error: str) -> WorkflowStep:
    return WorkflowStep(
        seq, definition.name, definition.kind, "failed", None, error, attempts, started, now()
    )


class _InStep:
    """Marks the run as inside a step's body while it runs (durable calls are refused)."""

    def __init__(self, run: WorkflowRun) -> None:
        self.run = run

    def __enter__(self) -> None:
        self.run.in_step = True

    def __exit__(self, *exc: object) -> None:
        self.run.in_step = False


def _sync_step(definition: StepDef, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        run = RUN.get()
        if run is None or run.in_step:
            return fn(*args, **kwargs)
        if not run.threaded:  # it would block the worker's loop, and cannot await its record
            raise StepFailedError(
                definition.name, "a sync step called from an async workflow: make it async"
            )
        seq, record = run.next(definition.kind, definition.name)
        if record is not None:
            return _replayed(definition, record)
        started, attempts = now(), 0
        cause: BaseException | None = None
        while True:
            attempts += 1
            try:
                with _InStep(run):
                    value = _checked(fn(*args, **kwargs))
                done = _done(seq, definition, started, attempts, value)
                break
            except (Exception, JsonValueError) as exc:
                if attempts > definition.retries or run.cancel.is_set():
                    done = _failed(seq, definition, started, attempts, _describe(exc))
                    cause = exc
                    break
                _log_retry(run, definition, attempts, exc)
                time.sleep(definition.delay(attempts))
        stored = run.call(run.store.record_workflow_step(run.job_id, done))
        if stored.failed:
            raise StepFailedError(definition.name, stored.error or "failed") from cause
        return stored.output

    return call


def _async_step(definition: StepDef, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        run = RUN.get()
        if run is None or run.in_step:
            return await fn(*args, **kwargs)
        seq, record = run.next(definition.kind, definition.name)
        if record is not None:
            return _replayed(definition, record)
        started, attempts = now(), 0
        cause: BaseException | None = None
        while True:
            attempts += 1
            try:
                with _InStep(run):
                    value = _checked(await fn(*args, **kwargs))
                done = _done(seq, definition, started, attempts, value)
                break
            except (Exception, JsonValueError) as exc:
                if attempts > definition.retries or run.cancel.is_set():
                    done = _failed(seq, definition, started, attempts, _describe(exc))
                    cause = exc
                    break
                _log_retry(run, definition, attempts, exc)
                await asyncio.sleep(definition.delay(attempts))
        stored = await run.store.record_workflow_step(run.job_id, done)
        if stored.failed:
            raise StepFailedError(definition.name, stored.error or "failed") from cause
        return stored.output

    return call


def _transaction(definition: StepDef, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(session, *args, **kwargs)``; in a workflow it is called without the session."""
    is_async = inspect.iscoroutinefunction(fn)

    async def durable(run: WorkflowRun, args: Any, kwargs: Any) -> Any:
        seq, record = run.next(definition.kind, definition.name)
        if record is not None:
            return _replayed(definition, record)
        started = now()
        pending = WorkflowStep(
            seq, definition.name, definition.kind, "completed", None, None, 1, started
        )

        async def body(session: Any) -> Any:
            with _InStep(run):
                if is_async:
                    return _checked(await fn(session, *args, **kwargs))
                context = contextvars.copy_context()
                return _checked(
                    await session.run_sync(lambda s: context.run(fn, s, *args, **kwargs))
                )

        try:
            stored = await run.store.run_transaction_step(run.job_id, pending, body)
        except (Exception, JsonValueError) as exc:  # rolled back: record the failure alone
            log.warning("workflow_transaction_failed", step=definition.name, error=repr(exc))
            stored = await run.store.record_workflow_step(
                run.job_id, _failed(seq, definition, started, 1, _describe(exc))
            )
            if stored.failed:
                raise StepFailedError(definition.name, stored.error or "failed") from exc
        return _replayed(definition, stored)

    if is_async:

        @functools.wraps(fn)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            run = RUN.get()
            if run is None or run.in_step:
                return await fn(*args, **kwargs)
            return await durable(run, args, kwargs)

        return call_async

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        run = RUN.get()
        if run is None or run.in_step:
            return fn(*args, **kwargs)
        return run.call(durable(run, args, kwargs))

    return call


def _log_retry(run: WorkflowRun, definition: StepDef, attempts: int, exc: BaseException) -> None:
    # Through logging: a function step's log records go to its job's log.
    job_log.warning(
        "step %r attempt %d failed (%s); retry %d/%d in %.3gs\n%s",
        definition.name,
        attempts,
        _describe(exc),
        attempts,
        definition.retries,
        definition.delay(attempts),
        "".join(traceback.format_exception(exc)[-2:]).rstrip(),
    )


def make_step(definition: StepDef, fn: Callable[..., Any]) -> Callable[..., Any]:
    if definition.transaction:
        wrapped = _transaction(definition, fn)
    elif inspect.iscoroutinefunction(fn):
        wrapped = _async_step(definition, fn)
    else:
        wrapped = _sync_step(definition, fn)
    wrapped.__headwater_step__ = definition  # type: ignore[attr-defined]
    return wrapped
