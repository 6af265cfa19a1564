"""Re-run a final job from a chosen step: a new job whose earlier steps keep their outputs.

The new job is a retry (``source_type: retry``, ``source_id``: the job it re-runs), with
the same task and input, validated against the task's current schema. Steps that are
neither the chosen step nor after it in the DAG (its dependents, transitively) and that
completed or were skipped are copied into the new job, outputs and times included; the
executor resumes after them exactly as it resumes a recovered job
(``engine.executor``: completed and skipped steps stay as they ended). The chosen step,
every step after it, and any other step that did not complete run again.

A step before the chosen one (one it depends on, transitively) must have completed or
been skipped in the job: its output is what the chosen step reads.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from headwater.core.status import StepStatus
from headwater.dispatch.dispatcher import Dispatcher, Event
from headwater.dispatch.task_retry import RETRY_SOURCE
from headwater.errors import ConflictError, NotFoundError
from headwater.store.base import JobRecord, StepRecord, StepUpdate
from headwater.workspace.hooks import find_task
from headwater.workspace.models import Step, Workspace

__all__ = ["after_step", "before_step", "kept_steps", "rerun_from"]

log = structlog.get_logger(__name__)

_KEPT = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})


def after_step(flow: Mapping[str, Step], start: str) -> set[str]:
    """``start`` and every step that depends on it, directly or not."""
    found = {start}
    changed = True
    while changed:
        changed = False
        for name, step in flow.items():
            if name not in found and any(dep in found for dep in step.depends_on):
                found.add(name)
                changed = True
    return found


def before_step(flow: Mapping[str, Step], start: str) -> set[str]:
    """Every step ``start`` depends on, directly or not (not ``start`` itself)."""
    found: set[str] = set()
    todo = list(flow[start].depends_on) if start in flow else []
    while todo:
        name = todo.pop()
        if name in found or name not in flow:
            continue
        found.add(name)
        todo.extend(flow[name].depends_on)
    return found


def _base(record: StepRecord) -> str:
    # A for_each instance ("name[3]") belongs to its step.
    return record.name.partition("[")[0]


def kept_steps(flow: Mapping[str, Step], job: JobRecord, start: str) -> list[StepUpdate]:
    """The step states a re-run of ``job`` from ``start`` starts with. Raises
    NotFoundError (no such step) or ConflictError (an earlier step did not complete)."""
    if start not in flow:
        known = ", ".join(flow) or "(none)"
        raise NotFoundError(f"task {job.task!r} has no step {start!r} (its steps: {known})")
    rerun = after_step(flow, start)
    records = {r.name: r for r in job.steps}
    missing = sorted(
        name
        for name in before_step(flow, start)
        if name not in records or records[name].status not in _KEPT
    )
    if missing:
        shown = ", ".join(
            f"{name} ({records[name].status.value if name in records else 'never ran'})"
            for name in missing
        )
        raise ConflictError(
            f"cannot re-run job {job.id} from step {start!r}: the steps before it did not "
            f"all complete: {shown}; re-run from an earlier step"
        )
    return [_update(r) for r in job.steps if r.status in _KEPT and _base(r) not in rerun]


def _update(record: StepRecord) -> StepUpdate:
    return StepUpdate(
        name=record.name,
        action=record.action,
        status=record.status,
        exit_code=record.exit_code,
        output=record.output,
        error=record.error,
        attempts=record.attempts,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )


async def rerun_from(dispatcher: Dispatcher, ws: Workspace, job: JobRecord, start: str) -> str:
    """A new job of ``job``'s task from step ``start`` (see the module's rules); its id.
    ``job`` must be final (ConflictError otherwise) and carry its steps."""
    if not job.status.is_terminal:
        raise ConflictError(f"job {job.id} is {job.status.value}: only a final job can be re-run")
    task = find_task(ws, job.task)
    if task is None:
        raise NotFoundError(f"task {job.task!r} is not defined in workspace {ws.name!r}")
    kept = kept_steps(task.flow, job, start)
    event = Event(job.task, job.input, RETRY_SOURCE, source_id=job.id)
    job_id = await dispatcher.submit_with_steps(event, kept)
    log.info("job_rerun", job_id=job_id, rerun_of=job.id, from_step=start, kept=len(kept))
    return job_id
