"""``on_success`` / ``on_error`` / ``on_cancel`` hooks: a finished job's hooks become jobs.

Strøm's rules, which headwater follows:
- a completed job fires its task's ``on_success`` hooks, a failed one its ``on_error``
  hooks, a cancelled one its ``on_cancel`` hooks (cancelled by a person, a timeout or a
  scheduler's ``cancel_previous``);
- a failed job whose task sets ``retry`` and has retries left starts its next attempt
  instead (``headwater.dispatch.task_retry``) and fires no hooks;
- the workspace's hooks of that kind fire instead when the task has none of its own, and
  only for top-level jobs (not for the sub-job of a ``type: task`` step);
- a hook's ``input`` is rendered with ``hook.*`` (the finished job) and ``secret.*``;
- a hook runs as a job with ``source_type: hook`` and ``source_id`` the finished job:
  task ``_hook:<action>`` (one step, ``hook``), or the task of a ``type: task`` action;
- a hook job never fires hooks, so a failing hook cannot loop;
- firing is best effort: a hook that cannot start is noted in the finished job's log and
  never changes that job. Each hook has a dedup key, so firing twice makes one job;
- ``on_suspended`` hooks fire (same selection) once per approval step that starts to
  wait, with ``hook.status`` "suspended", ``hook.step_name`` and ``hook.message``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from headwater.dispatch.dispatcher import Dispatcher, DispatchStatus, Event
from headwater.dispatch.task_retry import (
    RETRY_SOURCE,
    retry_attempt,
    retry_policy,
    should_retry,
)
from headwater.errors import HeadwaterError
from headwater.store.base import JobRecord, JobStatus, LogLine, LogStream, StepStatus, Store
from headwater.workspace.hooks import find_task, hook_task_name
from headwater.workspace.models import ActionType, Hook, Workspace
from headwater.workspace.templating import TemplateEngine, build_context

__all__ = ["HOOK_SOURCE", "HookFirer", "hook_context", "select_hooks"]

log = structlog.get_logger(__name__)

HOOK_SOURCE = "hook"
_EVENTS = {
    JobStatus.COMPLETED: "on_success",
    JobStatus.FAILED: "on_error",
    JobStatus.CANCELLED: "on_cancel",
}
SUSPENDED_EVENT = "on_suspended"


def select_hooks(
    ws: Workspace,
    task: str,
    status: JobStatus,
    source_type: str,
    parent_job_id: str | None,
    event: str | None = None,
) -> tuple[str, list[Hook]]:
    """``(event, hooks)`` a job of ``task`` that ended with ``status`` fires (or, with
    ``event``, that kind of hook: ``on_suspended``)."""
    event = event or _EVENTS.get(status)
    if event is None or source_type == HOOK_SOURCE:
        return "", []
    own = ws.tasks.get(task)
    hooks: list[Hook] = list(getattr(own, event)) if own is not None else []
    if not hooks and parent_job_id is None:
        hooks = list(getattr(ws, event))
    return event, hooks


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


def hook_context(ws: Workspace, job: JobRecord) -> dict[str, Any]:
    """The ``hook`` template variable, with Strøm's names."""
    task = find_task(ws, job.task)
    failed_steps = [
        {
            "step_name": s.name,
            "action_name": s.action,
            "error_message": s.error,
            "continue_on_failure": bool(
                task is not None and s.name in task.flow and task.flow[s.name].continue_on_failure
            ),
        }
        for s in job.steps
        if s.status is StepStatus.FAILED
    ]
    duration = (
        (job.finished_at - job.started_at).total_seconds()
        if job.finished_at is not None and job.started_at is not None
        else None
    )
    # Strøm names the task inside its workspace: a later workspace's task is stored as
    # "<workspace>/<task>" here (README "Several workspaces"), its hooks see "<task>".
    own_name = job.task.removeprefix(f"{job.workspace}/") if job.workspace != ws.name else job.task
    return {
        "workspace": job.workspace,
        "task_name": own_name,
        "job_id": job.id,
        "status": job.status.value,
        "is_success": job.status is JobStatus.COMPLETED,
        "error_message": job.error,
        "source_type": job.source_type,
        "source_id": job.source_id,
        "started_at": _iso(job.started_at),
        "completed_at": _iso(job.finished_at),
        "duration_secs": duration,
        "failed_steps": failed_steps,
        "output": job.output,
    }


class HookFirer:
    """Turns a finished job's hooks into jobs, through the dispatcher."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        workspace: Callable[[], Workspace],
        templates: TemplateEngine,
        secrets: Callable[[], Mapping[str, str]],
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._workspace = workspace
        self._templates = templates
        self._secrets = secrets

    def has_hooks(self) -> bool:
        """Whether any hook is defined (else nothing needs to look at finished jobs)."""
        ws = self._workspace()
        return bool(
            ws.on_success
            or ws.on_error
            or ws.on_suspended
            or ws.on_cancel
            or any(
                t.on_success or t.on_error or t.on_suspended or t.on_cancel or t.retry
                for t in ws.tasks.values()
            )
        )

    async def fire_suspended(self, job_id: str, steps: Sequence[str]) -> list[str]:
        """Fire the ``on_suspended`` hooks of ``job_id`` for each of its waiting ``steps``."""
        ws = self._workspace()
        job = await self._store.get_job(job_id)
        if job is None or job.status.is_terminal:  # cancelled as it was let go
            return []
        _, hooks = select_hooks(
            ws, job.task, job.status, job.source_type, job.parent_job_id, SUSPENDED_EVENT
        )
        if not hooks:
            return []
        ids: list[str] = []
        by_name = {s.name: s for s in job.steps}
        for step in steps:
            record = by_name.get(step)
            output = record.output if record is not None else None
            message = output.get("approval_message") if isinstance(output, Mapping) else None
            extra = {"status": "suspended", "step_name": step, "message": message or ""}
            ids.extend(await self.fire(job, event=(SUSPENDED_EVENT, step, extra)))
        return ids

    async def fire_finished(
        self, job: JobRecord, status: JobStatus, tags: frozenset[str] | None = None
    ) -> list[str]:
        """Fire the hooks of ``job`` (as claimed) that just ended with ``status``;
        returns the hook jobs' ids. ``tags`` pins the hook jobs to workers with them."""
        ws = self._workspace()
        _, hooks = select_hooks(ws, job.task, status, job.source_type, job.parent_job_id)
        retries = status is JobStatus.FAILED and retry_policy(ws, job) is not None
        if not hooks and not retries:
            return []
        record = await self._store.get_job(job.id)
        if record is None or not record.status.is_terminal:
            return []
        return await self.finished(record, tags)

    async def finished(self, job: JobRecord, tags: frozenset[str] | None = None) -> list[str]:
        """The next attempt of the finished ``job`` if its task retries it, else its hooks."""
        if await self.retry(job, tags) is not None:
            return []
        return await self.fire(job, tags)

    async def retry(self, job: JobRecord, tags: frozenset[str] | None = None) -> str | None:
        """Start the next attempt of the failed ``job`` (task ``retry``); its id, or None
        when the task does not retry it (or has no retries left)."""
        policy = retry_policy(self._workspace(), job)
        if policy is None or job.status is not JobStatus.FAILED:
            return None
        attempt = await retry_attempt(self._store.get_job, job)
        if not should_retry(policy, job, attempt):
            return None
        event = Event(
            job.task,
            job.input,
            RETRY_SOURCE,
            source_id=job.id,
            dedup_key=f"retry:{job.id}",
            tags=tags,
        )
        (outcome,) = await self._dispatcher.dispatch([event])
        if outcome.status is DispatchStatus.REJECTED or outcome.job_id is None:
            await self._note(job.id, f"task retry not started: {outcome.reason}")
            return None
        delay = policy.delay(attempt + 1)
        await self._note(
            job.id,
            f"task retry {attempt + 1}/{policy.count}: job {outcome.job_id} (in {delay:.3g}s)",
        )
        log.info("task_retried", job_id=job.id, retry_job_id=outcome.job_id, attempt=attempt + 1)
        return outcome.job_id

    async def fire(
        self,
        job: JobRecord,
        tags: frozenset[str] | None = None,
        event: tuple[str, str, Mapping[str, Any]] | None = None,
    ) -> list[str]:
        """Fire the hooks of the finished ``job`` (a full record, with its steps); with
        ``event`` (kind, step, extra ``hook.*`` values) the hooks of a waiting step."""
        ws = self._workspace()
        kind, step, extra = event if event is not None else (None, "", {})
        event_name, hooks = select_hooks(
            ws, job.task, job.status, job.source_type, job.parent_job_id, kind
        )
        if not hooks:
            return []
        context = build_context(
            input=job.input,
            secrets=self._secrets(),
            job={"id": job.id, "task": job.task, "workspace": job.workspace},
            hook={**hook_context(ws, job), **extra},
        )
        # one hook job per waiting step (a job may wait for several, one after another)
        dedup = f"{event_name}:{step}" if step else event_name
        events: list[Event] = []
        labels: list[str] = []
        for i, hook in enumerate(hooks):
            label = f"{event_name} hook {i + 1} ({hook.action})"
            action = ws.actions.get(hook.action)
            try:
                if action is None:
                    raise HeadwaterError(f"action {hook.action!r} is not defined")
                rendered = self._templates.render(hook.input, context, where=f"{label} input")
            except HeadwaterError as exc:
                await self._note(job.id, f"{label} not started: {exc}")
                continue
            target = (
                action.task
                if action.type is ActionType.TASK and action.task
                else hook_task_name(hook.action)
            )
            payload = rendered if isinstance(rendered, Mapping) else {"value": rendered}
            events.append(
                Event(
                    target,
                    payload,
                    HOOK_SOURCE,
                    source_id=job.id,
                    dedup_key=f"hook:{job.id}:{dedup}:{i}",
                    tags=tags,
                )
            )
            labels.append(label)
        if not events:
            return []
        ids: list[str] = []
        outcomes = await self._dispatcher.dispatch(events)
        for label, outcome in zip(labels, outcomes, strict=True):
            if outcome.status is DispatchStatus.REJECTED or outcome.job_id is None:
                await self._note(job.id, f"{label} not started: {outcome.reason}")
                continue
            ids.append(outcome.job_id)
            if outcome.status is DispatchStatus.ACCEPTED:
                await self._note(job.id, f"{label} started as job {outcome.job_id}")
        log.info("hooks_fired", job_id=job.id, hook_event=event_name, jobs=ids)
        return ids

    async def _note(self, job_id: str, text: str) -> None:
        try:
            await self._store.append_logs(
                [LogLine(job_id, None, LogStream.SYSTEM, text, datetime.now(UTC))]
            )
        except HeadwaterError:
            log.warning("hook_note_failed", job_id=job_id, note=text)
