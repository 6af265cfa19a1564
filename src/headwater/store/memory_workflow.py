"""Durable workflows for ``InMemoryStore`` (the rules of ``store.workflow_ops``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

from headwater.core.workflows import FINISHED_KEY, WorkflowStep, WorkflowWait
from headwater.errors import ConfigError
from headwater.store.base import Channel, JobRecord, JobStatus, StepRecord, StepStatus
from headwater.store.ids import tag_signature, utcnow
from headwater.store.jsoncopy import json_copy

__all__ = ["MemoryWorkflowOps"]


class MemoryWorkflowOps:
    """Mixed into InMemoryStore."""

    jobs: dict[str, JobRecord]
    steps: dict[str, dict[str, StepRecord]]
    workflow_records: dict[str, dict[int, WorkflowStep]]
    workflow_messages: dict[tuple[str, str], list[Any]]
    workflow_events: dict[tuple[str, str], Any]
    workflow_waits: dict[str, WorkflowWait]

    def _publish(self, channel: Channel, payloads: Iterable[str]) -> None:  # InMemoryStore's
        raise NotImplementedError

    def _with_steps(self, job: JobRecord) -> JobRecord:  # InMemoryStore's
        raise NotImplementedError

    async def find_workflow(self, workflow_id: str) -> JobRecord | None:
        for job in self.jobs.values():
            if job.dedup_key == workflow_id:
                return self._with_steps(job)
        found = self.jobs.get(workflow_id)
        return self._with_steps(found) if found is not None else None

    async def workflow_steps(self, job_id: str) -> list[WorkflowStep]:
        records = self.workflow_records.get(job_id, {})
        return [_copy(records[seq]) for seq in sorted(records)]

    def _record(self, job_id: str, step: WorkflowStep) -> WorkflowStep | None:
        """Record ``step``; the existing record when its seq has one."""
        records = self.workflow_records.setdefault(job_id, {})
        existing = records.get(step.seq)
        if existing is not None:
            return existing
        if step.finished_at is None:
            step = dataclasses.replace(step, finished_at=utcnow())
        records[step.seq] = _copy(step)
        return None

    async def record_workflow_step(self, job_id: str, step: WorkflowStep) -> WorkflowStep:
        return self._record(job_id, step) or step

    async def run_transaction_step(
        self, job_id: str, step: WorkflowStep, body: Callable[[Any], Awaitable[Any]]
    ) -> WorkflowStep:
        existing = self.workflow_records.get(job_id, {}).get(step.seq)
        if existing is not None:
            return existing
        raise ConfigError("a transaction step needs a database: use SQLite or PostgreSQL")

    async def send_workflow_message(
        self,
        job_id: str,
        topic: str,
        message: Any,
        sender: tuple[str, WorkflowStep] | None = None,
    ) -> WorkflowStep | None:
        if sender is not None:
            existing = self._record(*sender)
            if existing is not None:
                return existing
        self.workflow_messages.setdefault((job_id, topic), []).append(json_copy(message))
        wait = self.workflow_waits.get(job_id)
        now = utcnow()
        if wait is not None and wait.topic == topic:
            self.workflow_waits[job_id] = dataclasses.replace(wait, wake_at=now)
            self._wake(job_id, now)
        return sender[1] if sender is not None else None

    async def receive_workflow_message(
        self, job_id: str, topic: str, step: WorkflowStep
    ) -> WorkflowStep | None:
        existing = self.workflow_records.get(job_id, {}).get(step.seq)
        if existing is not None:
            return existing
        queue = self.workflow_messages.get((job_id, topic))
        if not queue:
            return None
        done = dataclasses.replace(step, output=queue.pop(0))
        self._record(job_id, done)
        return done

    async def set_workflow_event(
        self, job_id: str, key: str, value: Any, step: WorkflowStep
    ) -> WorkflowStep:
        existing = self._record(job_id, step)
        if existing is not None:
            return existing
        self.workflow_events[(job_id, key)] = json_copy(value)
        now = utcnow()
        for waiter, wait in list(self.workflow_waits.items()):
            if wait.event_job_id == job_id and wait.event_key == key:
                self.workflow_waits[waiter] = dataclasses.replace(wait, wake_at=now)
                self._wake(waiter, now)
        return step

    async def get_workflow_event(self, job_id: str, key: str) -> tuple[bool, Any]:
        if (job_id, key) not in self.workflow_events:
            return False, None
        return True, json_copy(self.workflow_events[(job_id, key)])

    async def wait_workflow(self, wait: WorkflowWait) -> None:
        self.workflow_waits[wait.job_id] = wait

    async def wake_workflows(self, now: datetime) -> list[str]:
        for job_id, wait in list(self.workflow_waits.items()):
            child = self.jobs.get(wait.event_job_id or "")
            if wait.event_key == FINISHED_KEY and child is not None and child.status.is_terminal:
                self.workflow_waits[job_id] = dataclasses.replace(wait, wake_at=now)
        due = [
            job_id
            for job_id, wait in self.workflow_waits.items()
            if wait.wake_at is not None and wait.wake_at <= now
        ]
        return [job_id for job_id in due if self._wake(job_id, now)]

    async def next_workflow_wake(self) -> datetime | None:
        times = [w.wake_at for w in self.workflow_waits.values() if w.wake_at is not None]
        return min(times) if times else None

    def _wake(self, job_id: str, now: datetime) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            self.workflow_waits.pop(job_id, None)
            return False
        wait = self.workflow_waits.get(job_id)
        if job.worker_id is not None or wait is None or wait.wake_at is None or wait.wake_at > now:
            return False
        del self.workflow_waits[job_id]
        for name, step in self.steps.get(job_id, {}).items():
            if step.status is StepStatus.SUSPENDED:
                self.steps[job_id][name] = dataclasses.replace(
                    step, status=StepStatus.PENDING, timeout_at=None
                )
        self.jobs[job_id] = dataclasses.replace(job, status=JobStatus.PENDING)
        self._publish(Channel.JOBS, [tag_signature(job.tags)])
        return True


def _copy(step: WorkflowStep) -> WorkflowStep:
    return dataclasses.replace(step, output=json_copy(step.output))
