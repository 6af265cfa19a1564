"""Strøm's ``for_each`` loop: one instance of a step per item, then fan-in.

The step's ``when`` is evaluated first (false: the step is skipped, nothing expands).
Then ``for_each`` is rendered: a list (its strings are templates) or one template that
must give a list. Each item runs as an instance named ``step[i]`` (stored as a step of
the job, with its own attempts and ``retry``), with ``each.item`` and ``each.index`` in
its templates. Instances run in parallel, at most ``max_parallel`` at a time, or one
after the other with ``sequential: true``.

Fan-in, as Strøm: the step's output is the list of the instances' outputs in item order
(``null`` for an instance that failed or was skipped). An empty list skips the step; a
value that is not a list, or more than ``MAX_ITEMS`` items, fails it. When an instance
fails, the other parallel instances still run and the step fails at the end; in a
sequential loop the remaining instances are skipped. With ``continue_on_failure`` the
step completes whatever its instances did.

A job resumed after a crash runs an unfinished loop's instances again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from headwater.errors import TemplateError
from headwater.store.base import JobRecord, StepStatus
from headwater.workspace.models import Task, Workspace

if TYPE_CHECKING:
    from headwater.engine.steps import StepRunner, StepState, StopSignal

__all__ = ["MAX_ITEMS", "instance_name", "run_for_each"]

MAX_ITEMS = 10_000
_FAILED = (StepStatus.FAILED, StepStatus.CANCELLED)


def instance_name(step: str, index: int) -> str:
    return f"{step}[{index}]"


async def run_for_each(
    steps: StepRunner,
    workspace: Workspace,
    task: Task,
    job: JobRecord,
    name: str,
    states: Mapping[str, StepState],
    stop: StopSignal,
) -> None:
    """Run the for_each step ``name`` of ``task`` and give it its final state."""
    from headwater.engine.steps import StepState

    step = task.flow[name]
    state = states[name]
    context = steps.context(job, states, workspace=workspace)
    try:
        if step.when is not None:
            condition = steps.templates.render(step.when, context, where=f"step {name!r} when")
            if not steps.templates.is_truthy(condition):
                await steps.final(job, states, state, StepStatus.SKIPPED, "when condition is false")
                return
        items = steps.templates.render(step.for_each, context, where=f"step {name!r} for_each")
    except TemplateError as exc:
        await steps.final(job, states, state, StepStatus.FAILED, str(exc))
        return
    if not isinstance(items, list):
        error = f"for_each must give a list, not {type(items).__name__}: {items!r:.200}"
        await steps.final(job, states, state, StepStatus.FAILED, error)
        return
    if len(items) > MAX_ITEMS:
        error = f"for_each gave {len(items)} items; at most {MAX_ITEMS} are allowed"
        await steps.final(job, states, state, StepStatus.FAILED, error)
        return
    if not items:
        await steps.final(job, states, state, StepStatus.SKIPPED, "for_each list is empty")
        return

    state.status = StepStatus.RUNNING
    state.attempts += 1
    state.started_at = datetime.now(UTC)
    await steps.record(job.id, state)
    await steps.system(job.id, name, f"for_each: {len(items)} instance(s)")

    # Each instance is a copy of the step without the loop, in a flow of its own.
    one = step.model_copy(update={"for_each": None, "when": None, "depends_on": []})
    names = [instance_name(name, i) for i in range(len(items))]
    flow = {**task.flow, **dict.fromkeys(names, one)}
    instance_task = task.model_copy(update={"flow": flow})
    action = step.action or f"<inline {name}>"
    instances = {n: StepState(name=n, action=action) for n in names}
    view: dict[str, StepState] = {**states, **instances}

    limit = 1 if step.sequential else (step.max_parallel or len(items))
    gate = asyncio.Semaphore(limit)
    halted = False  # a sequential loop stops at its first failure

    async def one_instance(index: int, item: Any) -> None:
        nonlocal halted
        inst = instances[names[index]]
        async with gate:
            if stop.event.is_set():
                return  # left for the job's end: "not started"
            if halted:
                await steps.final(
                    job, view, inst, StepStatus.SKIPPED, "skipped: an earlier instance failed"
                )
                return
            each = {"item": item, "index": index}
            await steps.run(workspace, instance_task, job, names[index], view, stop, each=each)
            if step.sequential and inst.status in _FAILED and not step.continue_on_failure:
                halted = True

    await asyncio.gather(*(one_instance(i, item) for i, item in enumerate(items)))
    for inst in instances.values():
        if not inst.status.is_terminal:
            inst.status = StepStatus.CANCELLED
            inst.error = f"not started: {stop.reason or 'job cancelled'}"
            inst.finished_at = datetime.now(UTC)
            await steps.record(job.id, inst)
        elif inst.unsaved:  # a loop's instance is never its job's last step
            inst.unsaved = False
            await steps.record(job.id, inst)

    state.output = [
        inst.output if inst.status is StepStatus.COMPLETED else None for inst in instances.values()
    ]
    failed = [inst for inst in instances.values() if inst.status in _FAILED]
    if stop.event.is_set() and stop.reason is None:
        await steps.final(job, states, state, StepStatus.CANCELLED, "cancelled")
    elif failed and not step.continue_on_failure:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        error = f"instance {first.name!r} failed: {first.error or 'unknown error'}{more}"
        await steps.final(job, states, state, StepStatus.FAILED, error)
    else:
        await steps.final(job, states, state, StepStatus.COMPLETED, None)
