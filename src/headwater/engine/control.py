"""``ControlPlane``: what the worker side (claim loop, step runner, log writer) needs from
the rest of headwater. It is the engine's port: defined here so that the engine imports
no worker; the worker's planes implement it.

Embedded mode (``headwater up``, ``headwater server --worker``) passes the ``Store``
itself, which has every one of these methods: no extra layer, no behaviour change.
A remote worker (``headwater worker``) passes an ``HttpControlPlane`` that makes the same
calls on a server over HTTP (``/worker/*``). Keeping the surface this small is what lets
the same Worker, JobExecutor and StepRunner run in both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

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

__all__ = ["ControlPlane"]


class ControlPlane(Protocol):
    # -- the worker's own life -----------------------------------------------------------
    async def register_worker(self, worker_id: str, name: str, tags: frozenset[str]) -> None: ...

    async def heartbeat(self, worker_id: str) -> list[str]:
        """Proof of life; returns ids of this worker's jobs it must stop."""
        ...

    async def deregister_worker(self, worker_id: str) -> None: ...

    async def list_workers(self) -> list[WorkerRecord]: ...

    async def recover_stale_jobs(self, stale_after: float) -> list[RecoveredJob]:
        """Embedded workers sweep; a remote one leaves it to the servers (returns [])."""
        ...

    # -- jobs ----------------------------------------------------------------------------
    async def claim_jobs(
        self, worker_id: str, tag_signatures: Sequence[str], limit: int
    ) -> list[JobRecord]: ...

    async def finish_job(
        self,
        job_id: str,
        worker_id: str | None,
        status: JobStatus,
        output: Any = None,
        error: str | None = None,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        """``steps``: the job's step states not stored yet, stored only if the finish
        applies (see ``Store.finish_job``)."""
        ...

    async def upsert_steps(self, job_id: str, steps: Sequence[StepUpdate]) -> None: ...

    async def suspend_job(
        self, job_id: str, worker_id: str, waiting: Mapping[str, datetime | None]
    ) -> bool:
        """The job waits for approvals: let it go (see ``Store.suspend_job``)."""
        ...

    async def release_job(
        self,
        job_id: str,
        worker_id: str,
        tags: frozenset[str],
        reason: str,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        """Hand the job on to a worker with ``tags`` (see ``Store.release_job``)."""
        ...

    async def append_logs(self, lines: Sequence[LogLine]) -> None: ...

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Sub-task steps follow their child job with it."""
        ...

    async def request_cancel(self, job_id: str) -> JobRecord: ...

    # -- task state between runs (Strøm's snapshots) -----------------------------------
    async def get_task_state(self, workspace: str, task: str | None) -> TaskStateRecord | None:
        """The current snapshot of ``task`` (None: the workspace's global state)."""
        ...

    async def save_task_state(self, snapshot: TaskStateRecord) -> None: ...

    # -- wake-ups ------------------------------------------------------------------------
    def subscribe(self, channel: Channel) -> Subscription:
        """``JOBS`` (work may be there), ``CANCEL`` and ``FINISHED`` hints."""
        ...
