"""Approval steps for ``InMemoryStore`` (the rules of ``store.approval_ops``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from headwater.errors import ConflictError, NotFoundError
from headwater.store.base import Channel, JobRecord, JobStatus, StepRecord, StepStatus
from headwater.store.ids import tag_signature, utcnow
from headwater.store.jsoncopy import json_copy

__all__ = ["MemoryApprovalOps"]


class MemoryApprovalOps:
    """Mixed into InMemoryStore."""

    jobs: dict[str, JobRecord]
    steps: dict[str, dict[str, StepRecord]]

    def _publish(self, channel: Channel, payloads: Iterable[str]) -> None:
        raise NotImplementedError  # provided by InMemoryStore

    def _with_steps(self, job: JobRecord) -> JobRecord:
        raise NotImplementedError  # provided by InMemoryStore

    def _waiting(self, job_id: str) -> set[str]:
        return {
            name
            for name, s in self.steps.get(job_id, {}).items()
            if s.status is StepStatus.SUSPENDED
        }

    async def suspend_job(
        self, job_id: str, worker_id: str, waiting: Mapping[str, datetime | None]
    ) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING or job.worker_id != worker_id:
            return False
        if job.cancel_requested:  # asked while the worker was letting it go: end it
            now = utcnow()
            for name in self._waiting(job_id):
                self.steps[job_id][name] = dataclasses.replace(
                    self.steps[job_id][name],
                    status=StepStatus.CANCELLED,
                    error="job cancelled",
                    finished_at=now,
                    timeout_at=None,
                )
            self.jobs[job_id] = dataclasses.replace(
                job, status=JobStatus.CANCELLED, finished_at=now, error="cancelled"
            )
            self._publish(Channel.FINISHED, [job_id])
            return True
        still = self._waiting(job_id)
        for name, deadline in waiting.items():
            if name in still and deadline is not None:
                step = self.steps[job_id][name]
                self.steps[job_id][name] = dataclasses.replace(step, timeout_at=deadline)
        decided = not set(waiting) <= still
        self.jobs[job_id] = dataclasses.replace(
            job,
            worker_id=None,
            attempt=job.attempt - 1,
            status=JobStatus.PENDING if decided else job.status,
        )
        if decided:
            self._publish(Channel.JOBS, [tag_signature(job.tags)])
        return True

    async def decide_step(
        self, job_id: str, step: str, status: StepStatus, output: Any, error: str | None
    ) -> JobRecord:
        if not status.is_terminal:
            raise ValueError(f"a decision completes or fails a step, not {status!r}")
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        current = self.steps.get(job_id, {}).get(step)
        if current is None:
            raise NotFoundError(f"job {job_id} has no step {step!r} (yet)")
        if current.status is not StepStatus.SUSPENDED or job.status is not JobStatus.RUNNING:
            raise ConflictError(
                f"step {step!r} of job {job_id} is {current.status.value}, not waiting for approval"
            )
        self.steps[job_id][step] = dataclasses.replace(
            current,
            status=status,
            output=json_copy(output),
            error=error,
            finished_at=utcnow(),
            timeout_at=None,
        )
        if job.worker_id is None:
            job = dataclasses.replace(job, status=JobStatus.PENDING)
            self.jobs[job_id] = job
            self._publish(Channel.JOBS, [tag_signature(job.tags)])
        return self._with_steps(job)

    async def due_approvals(self, now: datetime) -> list[tuple[str, str, datetime]]:
        due = [
            (job_id, name, s.timeout_at)
            for job_id, by_name in self.steps.items()
            for name, s in by_name.items()
            if s.status is StepStatus.SUSPENDED and s.timeout_at is not None and s.timeout_at <= now
        ]
        return sorted(due, key=lambda d: d[2])
