"""``SecretGuard``: the worker's control plane, with secrets kept out of what it stores.

Wraps the ``ControlPlane`` a worker uses (the store, or a server over HTTP):

- a claimed job's input gets its secret references filled in (``secret_refs.unseal``),
  so steps see the values while the stored input never holds them;
- job and step outputs and errors are masked (``Redactor``, substrings included) before
  they are stored, as log lines already are; the API masks what it answers as well.

Steps keep the real values in memory: a later step of the same job reads an earlier
step's output unmasked. Only what is written is masked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from headwater.engine.control import ControlPlane
from headwater.store.base import (
    Channel,
    JobRecord,
    JobStatus,
    LogLine,
    RecoveredJob,
    StepUpdate,
    WorkerRecord,
)
from headwater.store.notify import Subscription
from headwater.store.task_state import TaskStateRecord
from headwater.workspace.secret_refs import has_references, unseal
from headwater.workspace.secrets import Redactor

__all__ = ["SecretGuard"]


class SecretGuard:
    """A ``ControlPlane`` over ``inner``; ``secrets``/``redactor`` give the current ones
    (a workspace reload swaps them)."""

    def __init__(
        self,
        inner: ControlPlane,
        secrets: Callable[[], Mapping[str, str]],
        redactor: Callable[[], Redactor],
    ) -> None:
        self.inner = inner
        self._secrets = secrets
        self._redactor = redactor

    # -- what changes ----------------------------------------------------------------
    async def claim_jobs(
        self, worker_id: str, tag_signatures: Sequence[str], limit: int
    ) -> list[JobRecord]:
        jobs = await self.inner.claim_jobs(worker_id, tag_signatures, limit)
        return [self._unsealed(job, await self._sealed_for(job)) for job in jobs]

    async def _sealed_for(self, job: JobRecord) -> str | None:
        # A task retry's input is its first attempt's, sealed for that job's source.
        source, current, hops = job.source_id, job, 0
        if not has_references(job.input):
            return source
        while current.source_type == "retry" and current.source_id and hops < 101:
            previous = await self.inner.get_job(current.source_id)
            if previous is None:
                break
            source, current, hops = previous.source_id, previous, hops + 1
        return source

    async def finish_job(
        self,
        job_id: str,
        worker_id: str | None,
        status: JobStatus,
        output: Any = None,
        error: str | None = None,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        redactor = self._redactor()
        if redactor.active:
            output = redactor.redact(output)
            error = redactor.redact_text(error) if error is not None else None
            steps = [_masked(s, redactor) for s in steps]
        return await self.inner.finish_job(job_id, worker_id, status, output, error, steps)

    async def upsert_steps(self, job_id: str, steps: Sequence[StepUpdate]) -> None:
        redactor = self._redactor()
        if redactor.active:
            steps = [_masked(s, redactor) for s in steps]
        await self.inner.upsert_steps(job_id, steps)

    async def save_task_state(self, snapshot: TaskStateRecord) -> None:
        # The JSON is masked like an output; the files are kept as the step wrote them.
        redactor = self._redactor()
        if redactor.active and snapshot.state is not None:
            snapshot = dataclasses.replace(snapshot, state=redactor.redact(snapshot.state))
        await self.inner.save_task_state(snapshot)

    async def release_job(
        self,
        job_id: str,
        worker_id: str,
        tags: frozenset[str],
        reason: str,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        redactor = self._redactor()
        if redactor.active:
            steps = [_masked(s, redactor) for s in steps]
        return await self.inner.release_job(job_id, worker_id, tags, reason, steps)

    def _unsealed(self, job: JobRecord, source_id: str | None) -> JobRecord:
        if not has_references(job.input):
            return job
        return dataclasses.replace(job, input=unseal(job.input, self._secrets(), source_id))

    # -- the rest, as it is ----------------------------------------------------------
    async def register_worker(self, worker_id: str, name: str, tags: frozenset[str]) -> None:
        await self.inner.register_worker(worker_id, name, tags)

    async def heartbeat(self, worker_id: str) -> list[str]:
        return await self.inner.heartbeat(worker_id)

    async def deregister_worker(self, worker_id: str) -> None:
        await self.inner.deregister_worker(worker_id)

    async def list_workers(self) -> list[WorkerRecord]:
        return await self.inner.list_workers()

    async def recover_stale_jobs(self, stale_after: float) -> list[RecoveredJob]:
        return await self.inner.recover_stale_jobs(stale_after)

    async def append_logs(self, lines: Sequence[LogLine]) -> None:
        await self.inner.append_logs(lines)

    async def suspend_job(
        self, job_id: str, worker_id: str, waiting: Mapping[str, datetime | None]
    ) -> bool:
        return await self.inner.suspend_job(job_id, worker_id, waiting)

    async def get_job(self, job_id: str) -> JobRecord | None:
        return await self.inner.get_job(job_id)

    async def request_cancel(self, job_id: str) -> JobRecord:
        return await self.inner.request_cancel(job_id)

    async def get_task_state(self, workspace: str, task: str | None) -> TaskStateRecord | None:
        return await self.inner.get_task_state(workspace, task)

    def subscribe(self, channel: Channel) -> Subscription:
        return self.inner.subscribe(channel)


def _masked(step: StepUpdate, redactor: Redactor) -> StepUpdate:
    output = redactor.redact(step.output)
    error = redactor.redact_text(step.error) if step.error is not None else None
    if output is step.output and error == step.error:
        return step
    return dataclasses.replace(step, output=output, error=error)
