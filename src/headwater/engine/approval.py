"""Strøm's approval gate: a step that waits for a person, and what a decision stores.

The step renders its ``message`` (with ``input`` = the step's rendered input, or the
job's input when the step has none, as Strøm does) and becomes ``suspended``. The job
then runs whatever else it can and lets its worker go (``Store.suspend_job``): the wait
holds no slot and survives restarts. ``headwater approve`` / ``reject`` (or the HTTP
API) decide through the store (``Store.decide_step``), which puts the job back in the
queue; a worker resumes it where it stopped. Approved, the step's output is
``{approval_message, approved, approved_by, approved_at, input}``; rejected or timed
out, the step fails like any failed step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from headwater.errors import InputValidationError, TemplateError
from headwater.store.base import JobRecord, StepRecord, StepStatus, Store
from headwater.workspace.hooks import is_approval_step
from headwater.workspace.models import Action, Step, Workspace

if TYPE_CHECKING:
    from headwater.engine.steps import StepRunner, StepState

__all__ = [
    "MAX_REASON_CHARS",
    "approval_output",
    "decide",
    "is_approval",
    "keeps_decision",
    "wait_for_approval",
]

MAX_REASON_CHARS = 4096


is_approval = is_approval_step


def keeps_decision(prior: StepRecord, was_paused: bool) -> bool:
    """Whether a resumed job keeps ``prior`` as it is instead of running the step again:
    a waiting or decided approval step; and, in a job that paused for one, a step that
    failed by itself (not one a lost worker interrupted, which runs again)."""
    if prior.status is StepStatus.SUSPENDED:
        return True
    if not was_paused or prior.status is not StepStatus.FAILED:
        return False
    return not (prior.error or "").startswith("interrupted:")


async def wait_for_approval(
    runner: StepRunner,
    workspace: Workspace,
    job: JobRecord,
    name: str,
    step: Step,
    states: Mapping[str, StepState],
    context: Callable[[], Mapping[str, Any]],
) -> None:
    """Suspend step ``name``: render its message, store it, say how to decide."""
    state = states[name]
    action = workspace.action_for(step)
    try:
        values: Any = job.input
        if step.input:
            values = runner.templates.render(step.input, context(), where=f"step {name!r} input")
        message = runner.templates.render_str(
            action.message or "", {**context(), "input": values}, where=f"step {name!r} message"
        )
    except TemplateError as exc:
        await runner.final(job, states, state, StepStatus.FAILED, error=str(exc))
        return
    timeout = step.timeout if step.timeout is not None else action.timeout
    now = datetime.now(UTC)
    state.attempts = 1
    state.started_at = now
    state.status = StepStatus.SUSPENDED
    state.output = {"approval_message": message}
    state.timeout_at = now + timedelta(seconds=timeout) if timeout is not None else None
    await runner.record(job.id, state)
    until = f" (times out at {state.timeout_at.isoformat()})" if state.timeout_at else ""
    await runner.system(
        job.id,
        name,
        f"waiting for approval{until}: headwater approve {job.id} {name} [--input JSON]"
        f" | headwater reject {job.id} {name} [--reason TEXT]",
    )


def approval_output(
    prior: Any, approver: str, given: Mapping[str, Any] | None, at: datetime
) -> dict[str, Any]:
    """The approved step's output: its message plus who approved, when, and their input."""
    output = dict(prior) if isinstance(prior, Mapping) else {}
    output.update(approved=True, approved_by=approver, approved_at=at.isoformat())
    if given is not None:
        output["input"] = dict(given)
    return output


def _required_missing(action: Action | None, given: Mapping[str, Any] | None) -> list[str]:
    if action is None:
        return []
    values = given or {}
    return [
        key for key, spec in action.input.items() if spec.required and values.get(key) in (None, "")
    ]


async def decide(
    store: Store,
    workspace: Workspace | None,
    job_id: str,
    step: str,
    *,
    approved: bool,
    approver: str,
    given: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> JobRecord:
    """Approve (with the approver's ``given`` input) or reject (with ``reason``) a
    waiting step. Raises NotFoundError, ConflictError, InputValidationError."""
    job = await store.get_job(job_id)
    record = next((s for s in job.steps if s.name == step), None) if job is not None else None
    if not approved:
        text = (reason or "").strip() or "approval rejected"
        error = f"rejected by {approver}: {text[:MAX_REASON_CHARS]}"
        return await store.decide_step(job_id, step, StepStatus.FAILED, None, error)
    action = _action_of(workspace, job, step)
    missing = _required_missing(action, given)
    if missing:
        where = f"{job.task if job is not None else '?'} step {step}"
        raise InputValidationError(where, [f"approval input needs {key!r}" for key in missing])
    prior = record.output if record is not None else None
    output = approval_output(prior, approver, given, datetime.now(UTC))
    return await store.decide_step(job_id, step, StepStatus.COMPLETED, output, None)


def _action_of(workspace: Workspace | None, job: JobRecord | None, step: str) -> Action | None:
    if workspace is None or job is None:
        return None
    task = workspace.tasks.get(job.task)
    if task is None or step not in task.flow:
        return None
    flow_step = task.flow[step]
    if flow_step.inline is None and flow_step.action not in workspace.actions:
        return None
    return workspace.action_for(flow_step)
