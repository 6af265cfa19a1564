"""``@headwater.workflow``, ``@headwater.step``, ``@headwater.transaction`` and
``start_workflow``: the decorated functions and how a call of one is routed.

A workflow function called ...
- as its job's body (the function step of its task, on a worker): runs durably, replaying
  the recorded calls (``WorkflowRun``);
- inside another workflow: a child workflow (a recorded start, then a durable wait for
  its result);
- anywhere else (a step of another job, a script with a ``WorkflowClient``): starts the
  workflow and waits for its result.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from headwater import jsonsafe
from headwater.core.workflows import WorkflowStep
from headwater.dispatch.task_retry import RETRY_SOURCE
from headwater.engine.function_context import CURRENT_FUNCTION, FunctionJob
from headwater.errors import RegistrationError, WorkflowError
from headwater.sdk.registrations import WorkflowRegistration, function_ref
from headwater.sdk.registry import Registry, default_registry
from headwater.sdk.workflows.handles import WorkflowHandle, start_definition
from headwater.sdk.workflows.runtime import RUN, WorkflowRun, on_loop
from headwater.sdk.workflows.steps import StepDef, make_step
from headwater.store.base import JobRecord, Store

__all__ = [
    "WorkflowDef",
    "definition_of",
    "start_workflow",
    "start_workflow_async",
    "step",
    "transaction",
    "workflow",
]

F = TypeVar("F", bound=Callable[..., Any])

_NO_STORE = (
    "workflow {name!r} needs a store for its records: run it on a worker (headwater up,"
    " headwater server --worker, headwater consumer run, headwater worker)"
)


@dataclass(frozen=True, slots=True)
class WorkflowDef:
    name: str
    function: Callable[..., Any]  # the user's function
    is_async: bool
    max_attempts: int | None = None  # claims (crashes) before recovery fails a run

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments by name: the job's input (JSON)."""
        try:
            bound = inspect.signature(self.function).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"workflow {self.name!r}: {exc}") from None
        values = dict(bound.arguments)
        jsonsafe.check_value(values)
        return values


def definition_of(fn: Callable[..., Any]) -> WorkflowDef:
    found = getattr(fn, "__headwater_workflow__", None)
    if not isinstance(found, WorkflowDef):
        raise WorkflowError(f"{function_ref(fn)} is not a @headwater.workflow")
    return found


def _is_body(fjob: FunctionJob | None, ref: str) -> bool:
    return fjob is not None and RUN.get() is None and fjob.ref == ref


def _arguments(fjob: FunctionJob, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A step that gives no input (a workflow's own task): the job's input."""
    if kwargs:
        return kwargs
    given = fjob.job.input
    return dict(given) if isinstance(given, Mapping) else {}


def _fresh(job: JobRecord) -> bool:
    """Never run before: on its first claim (a crash's requeue counts), never let go (a
    wait leaves its step's state), not a retry. Nothing can have recorded a call of it,
    so its records are not read (a round trip per run)."""
    return job.attempt == 1 and not job.steps and job.source_type != RETRY_SOURCE


async def _records(store: Store, job: JobRecord) -> list[WorkflowStep]:
    """The run's records; a retry of a failed run (``headwater retry``) starts with the
    calls that run completed before its first failure, so it goes on from there.

    A job on its first claim with no step state has no records (``_fresh``)."""
    if _fresh(job):
        return []
    records = await store.workflow_steps(job.id)
    if records or job.source_type != RETRY_SOURCE or job.source_id is None:
        return records
    for record in await store.workflow_steps(job.source_id):
        if record.failed:
            break
        records.append(await store.record_workflow_step(job.id, record))
    return records


async def _body_async(definition: WorkflowDef, fjob: FunctionJob, kwargs: Any) -> Any:
    if fjob.store is None:
        raise WorkflowError(_NO_STORE.format(name=definition.name))
    records = await _records(fjob.store, fjob.job)
    run = WorkflowRun(fjob, definition.name, records, fjob.store, threaded=False)
    token = RUN.set(run)
    try:
        result = await definition.function(**_arguments(fjob, kwargs))
    except Exception:
        if run.broken is not None:  # swallowed by the workflow: it still fails
            raise run.broken from None
        raise
    finally:
        RUN.reset(token)
    run.check_end()
    return result


def _body_sync(definition: WorkflowDef, fjob: FunctionJob, kwargs: Any) -> Any:
    if fjob.store is None:
        raise WorkflowError(_NO_STORE.format(name=definition.name))
    records = [] if _fresh(fjob.job) else on_loop(fjob.loop, _records(fjob.store, fjob.job))
    run = WorkflowRun(fjob, definition.name, records, fjob.store, threaded=True)
    token = RUN.set(run)
    try:
        result = definition.function(**_arguments(fjob, kwargs))
    except Exception:
        if run.broken is not None:
            raise run.broken from None
        raise
    finally:
        RUN.reset(token)
    run.check_end()
    return result


def _wrap(definition: WorkflowDef) -> Callable[..., Any]:
    fn = definition.function
    if definition.is_async:

        @functools.wraps(fn)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            fjob = CURRENT_FUNCTION.get()
            if _is_body(fjob, ref):
                assert fjob is not None
                return await _body_async(definition, fjob, kwargs)
            inputs = definition.bind(args, kwargs)
            handle = await start_definition(definition.name, inputs, None, definition.max_attempts)
            return await handle.result_async()

        wrapper: Callable[..., Any] = call_async
    else:

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            fjob = CURRENT_FUNCTION.get()
            if _is_body(fjob, ref):
                assert fjob is not None
                return _body_sync(definition, fjob, kwargs)
            handle = start_workflow(wrapper, *args, **kwargs)
            return handle.result()

        wrapper = call
    ref = function_ref(wrapper)
    wrapper.__headwater_workflow__ = definition  # type: ignore[attr-defined]
    return wrapper


@overload
def workflow(fn: F, /) -> F: ...


@overload
def workflow(
    *,
    name: str | None = None,
    registry: Registry | None = None,
    concurrency: Mapping[str, Any] | None = None,
    rate_limit: Mapping[str, Any] | None = None,
    max_attempts: int | None = None,
) -> Callable[[F], F]: ...


def workflow(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    registry: Registry | None = None,
    concurrency: Mapping[str, Any] | None = None,
    rate_limit: Mapping[str, Any] | None = None,
    max_attempts: int | None = None,
) -> Any:
    """Make ``fn`` (sync or async) a durable workflow: each run is a job of the task
    ``name`` (default: the function's name) whose input is the call's arguments by name;
    ``concurrency`` and ``rate_limit`` are that task's (as in YAML); ``max_attempts``:
    how many times a run is picked up after its worker was lost before it fails (None:
    the node's default, 3; waits do not count)."""

    def decorate(f: F) -> F:
        if any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(f).parameters.values()):
            raise RegistrationError(
                f"workflow {function_ref(f)}: *args cannot be passed by name (the job's"
                " input): declare the parameters"
            )
        definition = WorkflowDef(
            name or f.__name__, f, inspect.iscoroutinefunction(f), max_attempts
        )
        wrapper = _wrap(definition)
        target = registry if registry is not None else default_registry()  # empty is falsy
        target.add_workflow(
            WorkflowRegistration.of(
                definition.name,
                target.app,
                wrapper,
                concurrency=concurrency,
                rate_limit=rate_limit,
            )
        )
        return wrapper  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


@overload
def step(fn: F, /) -> F: ...


@overload
def step(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    transaction: bool = False,
) -> Callable[[F], F]: ...


def step(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    transaction: bool = False,
) -> Any:
    """A recorded call of a workflow: run at most ``1 + retries`` times (``backoff``
    seconds after the first failure, doubling up to ``max_backoff``), its output (JSON)
    or last error recorded and returned by every replay. ``transaction=True``: see
    ``transaction``. Outside a workflow, a plain call."""
    if retries < 0 or backoff < 0 or max_backoff < backoff:
        raise RegistrationError("step: need retries >= 0 and 0 <= backoff <= max_backoff")

    def decorate(f: F) -> F:
        definition = StepDef(name or f.__name__, retries, backoff, max_backoff, transaction)
        return make_step(definition, f)  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def transaction(fn: Any = None, /, *, name: str | None = None) -> Any:
    """A step run as ``fn(session, *args, **kwargs)`` on a SQLAlchemy session of
    headwater's database (sync ``Session`` for a sync function, ``AsyncSession`` for an
    async one): its writes and its record commit together, exactly once. Do not commit
    in it. In a workflow call it without the session; outside one, pass yours."""
    decorate = step(name=name, transaction=True)
    return decorate(fn) if fn is not None else decorate


async def start_workflow_async(
    fn: Callable[..., Any], *args: Any, workflow_id: str | None = None, **kwargs: Any
) -> WorkflowHandle:
    """Start workflow ``fn`` with these arguments and return its handle without waiting.
    ``workflow_id`` is the idempotency key: a run with that id already started is
    returned instead of starting another (default: a new UUID)."""
    definition = definition_of(fn)
    return await start_definition(
        definition.name, definition.bind(args, kwargs), workflow_id, definition.max_attempts
    )


def start_workflow(
    fn: Callable[..., Any], *args: Any, workflow_id: str | None = None, **kwargs: Any
) -> WorkflowHandle:
    """``start_workflow_async`` for sync code."""
    from headwater.sdk.workflows.backend import sync_call

    run = RUN.get()
    coro = start_workflow_async(fn, *args, workflow_id=workflow_id, **kwargs)
    if run is not None:
        return run.call(coro)
    return sync_call(coro)
