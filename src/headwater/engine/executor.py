"""Runs one job's flow: a DAG of steps with conditions, retries, timeouts and cancel.

Rules (also in the README):
- a step starts when every ``depends_on`` step is final; independent steps run in parallel;
- a failed step skips its dependents, unless a dependent sets ``continue_on_failure``;
- a step skipped because its ``when`` was false counts as satisfied for its dependents,
  but a step whose dependencies were all skipped is skipped too (cascade skip, as in
  Strøm), unless it sets ``continue_on_failure``;
- ``retry`` re-runs a failed (or timed-out) step after ``backoff × 2^(n−1)`` seconds;
- a task's ``retry`` job waits its delay before its first step (dispatch.task_retry);
- a ``for_each`` step runs one instance per item (``headwater.engine.fanout``);
- step and task ``timeout`` stop the process group (SIGTERM, grace, SIGKILL);
- the job fails when a step failed that did not set ``continue_on_failure``;
- an approval step waits (``suspended``) and its dependents with it; when nothing else
  can run the job lets its worker go (``JobOutcome.waiting``) until someone decides.
A job that was recovered after a crash resumes: completed steps keep their output. A job
resumed after an approval keeps every step that ended, and its waiting ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from headwater.dispatch.task_retry import RETRY_SOURCE, retry_attempt, retry_delay
from headwater.engine.approval import is_approval, keeps_decision
from headwater.engine.fanout import run_for_each
from headwater.engine.steps import StepRunner, StepState, StopSignal
from headwater.store.base import (
    JobRecord,
    JobStatus,
    LogLine,
    LogStream,
    StepStatus,
    StepUpdate,
)
from headwater.telemetry.tracing import Tracing, trace_id_of
from headwater.workspace.hooks import find_task
from headwater.workspace.models import RetryPolicy, Step, Task, Workspace

__all__ = ["JobExecutor", "JobOutcome"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class JobOutcome:
    status: JobStatus
    output: Any
    error: str | None
    # Final step states not stored yet: the worker stores them with the finish.
    steps: tuple[StepUpdate, ...] = ()
    # Not finished: these approval steps wait for a person (name → timeout time); the
    # worker lets the job go (``Store.suspend_job``) and a decision requeues it.
    waiting: Mapping[str, datetime | None] = dataclasses.field(default_factory=dict)
    # Not finished: the next step needs these worker tags, which this worker lacks; the
    # worker hands the job on (``error`` says what it waits for).
    handoff: frozenset[str] | None = None


HANDOFF_PREFIX = "waiting for a worker"
_KEPT = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})
_KEPT_HANDED_ON = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED})


def _now() -> datetime:
    return datetime.now(UTC)


class JobExecutor:
    """Executes jobs of one workspace; one instance serves many concurrent jobs."""

    def __init__(self, steps: StepRunner, tracing: Tracing | None = None) -> None:
        self._steps = steps
        self._tracing = tracing
        # Per workspace load and worker tags: the steps those tags cannot run.
        self._foreign: tuple[
            Workspace | None, frozenset[str] | None, dict[str, dict[str, frozenset[str]]]
        ] = (None, None, {})

    async def execute(
        self,
        workspace: Workspace,
        job: JobRecord,
        cancel: asyncio.Event,
        tags: frozenset[str] | None = None,
    ) -> JobOutcome:
        """Run the job's flow; its log lines carry ``job_id`` and ``trace_id``, and with
        tracing on it is a ``job`` span with a ``step:<name>`` span per step that ran.

        ``tags``: the worker's. A step that needs a tag outside them is not started; once
        nothing else can run, the outcome is a hand-over (``JobOutcome.handoff``)."""
        with structlog.contextvars.bound_contextvars(job_id=job.id, trace_id=trace_id_of(job.id)):
            tracing = self._tracing
            span = tracing.job(job.id, job.task, job.attempt) if tracing is not None else None
            if tracing is None or span is None:
                return await self._execute(workspace, job, cancel, None, tags)
            states: dict[str, StepState] = {}
            try:
                outcome = await self._execute(workspace, job, cancel, states, tags)
            except BaseException as exc:
                tracing.end_job(span, JobStatus.FAILED.value, repr(exc))
                raise
            for st in states.values():
                status = st.status.value
                tracing.step(span, st.name, status, st.started_at, st.finished_at, st.error)
            tracing.end_job(span, outcome.status.value, outcome.error)
            return outcome

    async def _execute(
        self,
        workspace: Workspace,
        job: JobRecord,
        cancel: asyncio.Event,
        sink: dict[str, StepState] | None,
        tags: frozenset[str] | None = None,
    ) -> JobOutcome:
        task = find_task(workspace, job.task)
        if task is None:
            error = f"task {job.task!r} is not defined in workspace {workspace.name!r}"
            await self._system(job, None, error)
            return JobOutcome(JobStatus.FAILED, None, error)
        states = self._initial_states(workspace, task, job)
        if job.source_type == RETRY_SOURCE and task.retry is not None:
            await self._retry_wait(task.retry, job, cancel)
        if sink is not None:
            sink.update(states)  # the same StepState objects: the caller sees their ends
        if task.timeout is None:
            # Only a cancel can stop the job: the steps watch the cancel event itself (a
            # watcher task per job costs more than a no-op function step).
            stop = StopSignal(event=cancel)
            foreign = self._foreign_steps(workspace, job.task, task, tags)
            waiting = await self._run_flow(workspace, task, job, states, stop, foreign)
            if waiting is not None:
                return self._handoff(task, states, waiting, foreign)
            return self._finished(task, states, cancel, stop)
        stop = StopSignal()

        async def watch() -> None:
            waiter = asyncio.ensure_future(cancel.wait())
            try:
                await asyncio.wait([waiter], timeout=task.timeout)
            finally:
                waiter.cancel()
            if cancel.is_set():
                stop.trigger(None)
            else:
                stop.trigger(f"task timed out after {task.timeout:g}s")

        watcher = asyncio.create_task(watch())
        foreign = self._foreign_steps(workspace, job.task, task, tags)
        try:
            waiting = await self._run_flow(workspace, task, job, states, stop, foreign)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if waiting is not None:
            return self._handoff(task, states, waiting, foreign)
        return self._finished(task, states, cancel, stop)

    def _foreign_steps(
        self, workspace: Workspace, name: str, task: Task, tags: frozenset[str] | None
    ) -> Mapping[str, frozenset[str]]:
        """The steps of ``task`` that need a tag outside ``tags``, with what they need."""
        if tags is None:
            return {}
        seen_ws, seen_tags, cache = self._foreign
        if seen_ws is not workspace or (seen_tags is not tags and seen_tags != tags):
            cache = {}
            self._foreign = (workspace, tags, cache)
        found = cache.get(name)
        if found is None:
            found = cache[name] = {
                step_name: need
                for step_name, step in task.flow.items()
                if not (need := workspace.step_tags(step)) <= tags
            }
        return found

    @staticmethod
    def _handoff(
        task: Task,
        states: Mapping[str, StepState],
        waiting: str,
        foreign: Mapping[str, frozenset[str]],
    ) -> JobOutcome:
        need = foreign[waiting]
        shown = ", ".join(sorted(need)) or "(none)"
        reason = f"{HANDOFF_PREFIX} with the tags {shown} (step {waiting!r})"
        unsaved = tuple(st.update() for st in states.values() if st.unsaved)
        return JobOutcome(JobStatus.PENDING, None, reason, steps=unsaved, handoff=need)

    def _finished(
        self, task: Task, states: Mapping[str, StepState], cancel: asyncio.Event, stop: StopSignal
    ) -> JobOutcome:
        outcome = self._outcome(task, states, cancelled=cancel.is_set(), stop=stop)
        unsaved = tuple(st.update() for st in states.values() if st.unsaved)
        return dataclasses.replace(outcome, steps=unsaved) if unsaved else outcome

    def _initial_states(
        self, workspace: Workspace, task: Task, job: JobRecord
    ) -> dict[str, StepState]:
        previous = {s.name: s for s in job.steps}
        paused = any(
            name in previous and is_approval(workspace, step) for name, step in task.flow.items()
        )
        # Handed on by another worker: every step it ended stays as it ended.
        kept = _KEPT_HANDED_ON if (job.error or "").startswith(HANDOFF_PREFIX) else _KEPT
        states: dict[str, StepState] = {}
        for name, step in task.flow.items():
            state = StepState(name=name, action=step.action or f"<inline {name}>")
            prior = previous.get(name)
            if prior is not None:
                state.attempts = prior.attempts
                # Resume after recovery: what finished stays finished.
                if prior.status in kept or keeps_decision(prior, paused):
                    state.status = prior.status
                    # Skipped because a dependency failed: its dependents skip too.
                    state.failed_upstream = (prior.error or "").startswith("skipped: dependency")
                    state.output = prior.output
                    state.error = prior.error
                    state.exit_code = prior.exit_code
                    state.started_at = prior.started_at
                    state.finished_at = prior.finished_at
            states[name] = state
        return states

    async def _run_flow(
        self,
        workspace: Workspace,
        task: Task,
        job: JobRecord,
        states: dict[str, StepState],
        stop: StopSignal,
        foreign: Mapping[str, frozenset[str]],
    ) -> str | None:
        """Run what this worker can; the name of a ready step it cannot run (for
        another worker) when nothing else is left, else None."""
        running: dict[asyncio.Task[None], str] = {}
        waiting: list[str] = []
        while True:
            if not stop.event.is_set():
                for name in self._ready(task, states):
                    if waiting and name in waiting:
                        continue
                    step = task.flow[name]
                    blocked_by = self._failed_dependency(step, states)
                    if blocked_by is not None and not step.continue_on_failure:
                        await self._finish_without_running(
                            job,
                            states[name],
                            StepStatus.SKIPPED,
                            f"skipped: dependency {blocked_by!r} failed",
                            failed_upstream=True,
                        )
                        continue
                    if self._all_dependencies_skipped(step, states):
                        await self._finish_without_running(
                            job,
                            states[name],
                            StepStatus.SKIPPED,
                            "skipped: all dependencies were skipped",
                        )
                        continue
                    if foreign and name in foreign:  # for a worker with its tags
                        waiting.append(name)
                        continue
                    states[name].status = StepStatus.RUNNING  # reserved; the runner sets times
                    if step.for_each is not None:  # Strøm's loop: instances, then fan-in
                        work = run_for_each(self._steps, workspace, task, job, name, states, stop)
                    else:
                        work = self._steps.run(workspace, task, job, name, states, stop)
                    t = asyncio.create_task(work, name=f"step:{job.id}:{name}")
                    running[t] = name
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                name = running.pop(t)
                exc = t.exception()
                if exc is not None:
                    # A bug in headwater, not in the user's step: record it on the step.
                    log.error("step_crashed", job_id=job.id, step=name, error=repr(exc))
                    await self._finish_without_running(
                        job, states[name], StepStatus.FAILED, f"internal error: {exc!r}"
                    )
        if waiting and not stop.event.is_set():
            return waiting[0]  # handed on first; the next worker keeps any approval wait
        if not stop.event.is_set() and any(
            st.status is StepStatus.SUSPENDED for st in states.values()
        ):
            return None  # the rest waits for the approval (the job is suspended, not ended)
        # Whatever never started (cancel/timeout) is cancelled.
        for state in states.values():
            if state.status in (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.SUSPENDED):
                await self._finish_without_running(
                    job,
                    state,
                    StepStatus.CANCELLED,
                    f"not started: {stop.reason or 'job cancelled'}",
                )
        return None

    @staticmethod
    def _ready(task: Task, states: Mapping[str, StepState]) -> list[str]:
        ready = []
        for name, step in task.flow.items():
            if states[name].status is not StepStatus.PENDING:
                continue
            if all(states[d].status.is_terminal for d in step.depends_on if d in states):
                ready.append(name)
        return ready

    @staticmethod
    def _all_dependencies_skipped(step: Step, states: Mapping[str, StepState]) -> bool:
        # Strøm's cascade skip: a step after a branch that was not taken is not taken
        # either. ``continue_on_failure`` opts out (the step runs whatever came before).
        if not step.depends_on or step.continue_on_failure:
            return False
        return all(states[d].status is StepStatus.SKIPPED for d in step.depends_on if d in states)

    @staticmethod
    def _failed_dependency(step: Step, states: Mapping[str, StepState]) -> str | None:
        for dep in step.depends_on:
            st = states.get(dep)
            if st is None:
                continue
            if st.status in (StepStatus.FAILED, StepStatus.CANCELLED):
                return dep
            if st.status is StepStatus.SKIPPED and st.failed_upstream:
                return dep
        return None

    async def _finish_without_running(
        self,
        job: JobRecord,
        state: StepState,
        status: StepStatus,
        reason: str,
        failed_upstream: bool = False,
    ) -> None:
        state.status = status
        state.error = reason
        state.failed_upstream = failed_upstream
        state.finished_at = _now()
        await self._steps.record(job.id, state)

    @staticmethod
    def _outcome(
        task: Task, states: Mapping[str, StepState], cancelled: bool, stop: StopSignal
    ) -> JobOutcome:
        output = {
            name: st.output
            for name, st in states.items()
            if st.status is StepStatus.COMPLETED and st.output is not None
        }
        if cancelled:
            return JobOutcome(JobStatus.CANCELLED, output or None, "cancelled")
        waiting = {
            name: st.timeout_at for name, st in states.items() if st.status is StepStatus.SUSPENDED
        }
        if waiting and stop.reason is None:
            return JobOutcome(JobStatus.RUNNING, output or None, None, waiting=waiting)
        failed = [
            (name, st)
            for name, st in states.items()
            if st.status in (StepStatus.FAILED, StepStatus.CANCELLED)
            and not task.flow[name].continue_on_failure
        ]
        if stop.reason is not None:
            return JobOutcome(JobStatus.FAILED, output or None, stop.reason)
        if failed:
            name, st = failed[0]
            error = f"step {name!r} failed: {st.error or 'unknown error'}"
            if len(failed) > 1:
                error += f" (and {len(failed) - 1} more failed steps)"
            return JobOutcome(JobStatus.FAILED, output or None, error)
        return JobOutcome(JobStatus.COMPLETED, output or None, None)

    async def _retry_wait(self, policy: RetryPolicy, job: JobRecord, cancel: asyncio.Event) -> None:
        """A task retry waits its delay (from its creation) before its first step."""
        attempt = await retry_attempt(self._steps.control.get_job, job)
        delay = retry_delay(policy, job, max(1, attempt))
        if delay <= 0:
            return
        await self._system(job, None, f"task retry {attempt}: starting in {delay:.3g}s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cancel.wait(), delay)

    async def _system(self, job: JobRecord, step: str | None, text: str) -> None:
        await self._steps.logs.write(LogLine(job.id, step, LogStream.SYSTEM, text, _now()))
