"""Starting workflows and reading their ends: ``start_workflow``, ``WorkflowHandle``.

A workflow run is a job of the workflow's task; its workflow id is the job's dedup key,
so starting a workflow with an id that exists returns the existing run (whatever its
state). Inside a workflow, starting one is a recorded call (a child workflow, with the
id ``{parent id}/{call number}`` unless given), and waiting for its result is a durable
wait: the parent holds no worker meanwhile.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from headwater.core.workflows import (
    FINISHED_KEY,
    TIMED_OUT,
    WorkflowStart,
    WorkflowStep,
    WorkflowStepKind,
    WorkflowWait,
)
from headwater.engine.function_context import CURRENT_FUNCTION
from headwater.errors import NotFoundError, WorkflowError, WorkflowFailedError
from headwater.sdk.workflows.backend import backend, backend_store, sync_call
from headwater.sdk.workflows.primitives import wait_durably
from headwater.sdk.workflows.runtime import RUN, WorkflowRun
from headwater.store.base import Channel, JobRecord, JobStatus

__all__ = ["WORKFLOW_STEP", "WorkflowHandle", "job_result", "start_definition"]

# The step of a workflow's task that runs the function; the job's output is under it.
WORKFLOW_STEP = "workflow"


def job_result(workflow_id: str, job: JobRecord) -> Any:
    """A finished workflow job's return value; raises WorkflowFailedError."""
    if job.status is not JobStatus.COMPLETED:
        raise WorkflowFailedError(workflow_id, job.status.value, job.error)
    output = job.output
    if isinstance(output, Mapping):
        if WORKFLOW_STEP in output:
            return output[WORKFLOW_STEP]
        if len(output) == 1:  # a workflow run by a YAML step of another name
            return next(iter(output.values()))
    return output or None


@dataclass(frozen=True, slots=True)
class WorkflowHandle:
    """A started workflow: ``workflow_id`` (its idempotency key) and its ``job_id``."""

    workflow_id: str
    job_id: str

    async def status_async(self) -> JobStatus:
        job = await backend_store().get_job(self.job_id)
        if job is None:
            raise NotFoundError(f"workflow {self.workflow_id!r} (job {self.job_id}) is gone")
        return job.status

    def status(self) -> JobStatus:
        """The job's status: pending, running (also while it waits), completed, ..."""
        run = RUN.get()
        if run is not None:
            return run.call(self.status_async())
        return sync_call(self.status_async())

    async def result_async(self, timeout: float | None = None) -> Any:
        """Wait for the workflow's end (``timeout`` seconds at most: TimeoutError) and
        return what its function returned; WorkflowFailedError if it failed or was
        cancelled. Inside a workflow the wait is durable."""
        run = RUN.get()
        if run is not None and not run.in_step:
            return await _child_result(run, self, timeout)
        store = backend_store()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        with store.subscribe(Channel.FINISHED) as finished:
            while True:
                job = await store.get_job(self.job_id)
                if job is None:
                    raise NotFoundError(
                        f"workflow {self.workflow_id!r} (job {self.job_id}) is gone"
                    )
                if job.status.is_terminal:
                    return job_result(self.workflow_id, job)
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise TimeoutError(f"workflow {self.workflow_id!r} did not end in {timeout}s")
                await finished.wait(min(0.5, left) if left is not None else 0.5)

    def result(self, timeout: float | None = None) -> Any:
        """``result_async`` for sync code."""
        run = RUN.get()
        if run is not None:
            return run.call(self.result_async(timeout))
        return sync_call(self.result_async(timeout))


async def _child_result(run: WorkflowRun, handle: WorkflowHandle, timeout: float | None) -> Any:
    async def probe(step: WorkflowStep) -> WorkflowStep | None:
        job = await run.store.get_job(handle.job_id)
        if job is not None and not job.status.is_terminal:
            return None
        ended: dict[str, Any] = (
            {"status": "missing", "error": f"job {handle.job_id} is gone"}
            if job is None
            else {"status": job.status.value, "error": job.error}
        )
        if job is not None and job.status is JobStatus.COMPLETED:
            ended["output"] = job_result(handle.workflow_id, job)
        done = WorkflowStep(step.seq, step.name, step.kind, "completed", ended)
        return await run.store.record_workflow_step(run.job_id, done)

    record = await wait_durably(
        run,
        WorkflowStepKind.RESULT,
        f"result:{handle.workflow_id}",
        timeout,
        probe,
        lambda deadline: WorkflowWait(
            run.job_id, deadline, event_job_id=handle.job_id, event_key=FINISHED_KEY
        ),
    )
    if record.error == TIMED_OUT:
        raise TimeoutError(f"workflow {handle.workflow_id!r} did not end in {timeout}s")
    ended = record.output if isinstance(record.output, Mapping) else {}
    if ended.get("status") != JobStatus.COMPLETED.value:
        raise WorkflowFailedError(handle.workflow_id, str(ended.get("status")), ended.get("error"))
    return ended.get("output")


async def start_definition(
    name: str,
    inputs: Mapping[str, Any],
    workflow_id: str | None,
    max_attempts: int | None = None,
) -> WorkflowHandle:
    """Start workflow task ``name`` (or find the run ``workflow_id`` names)."""
    run = RUN.get()
    if run is not None and not run.in_step:
        return await _start_child(run, name, inputs, workflow_id, max_attempts)
    found = backend()
    wid = workflow_id or str(uuid.uuid4())
    fjob = CURRENT_FUNCTION.get()
    parent = fjob.job.id if fjob is not None else None
    outcome = await found.start_job(WorkflowStart(name, inputs, wid, parent, max_attempts))
    return WorkflowHandle(wid, outcome.id)


async def _start_child(
    run: WorkflowRun,
    name: str,
    inputs: Mapping[str, Any],
    workflow_id: str | None,
    max_attempts: int | None,
) -> WorkflowHandle:
    seq, record = run.next(WorkflowStepKind.CHILD, name)
    if record is None:
        if run.start_job is None:
            raise WorkflowError("this worker cannot start workflows (no dispatcher)")
        wid = workflow_id or f"{run.workflow_id}/{seq}"
        start = WorkflowStart(name, inputs, wid, run.job_id, max_attempts)
        outcome = await run.start_job(start)
        started = {"workflow_id": wid, "job_id": outcome.id}
        record = await run.store.record_workflow_step(
            run.job_id, WorkflowStep(seq, name, WorkflowStepKind.CHILD, "completed", started)
        )
    output = record.output if isinstance(record.output, Mapping) else {}
    return WorkflowHandle(str(output["workflow_id"]), str(output["job_id"]))
