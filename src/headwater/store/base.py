"""The Store interface: the one source of truth every other component restarts from.

One implementation (``headwater.store.sql.SqlStore``) serves SQLite and PostgreSQL; the
dialect specifics (claiming, wake-ups) are kept small. Records are small frozen
dataclasses; timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

# The records and statuses live in ``headwater.core``; they are re-exported here because
# many modules (and users) import them from the store.
from headwater.core.records import (
    NO_FLOW,
    ConcurrencyStrategy,
    CursorRecord,
    InsertOutcome,
    JobFilter,
    JobFlow,
    JobRecord,
    Lease,
    LogLine,
    LogRecord,
    NewJob,
    PausedRecord,
    PruneCounts,
    RecoveredJob,
    RejectedEvent,
    StateRecord,
    StepRecord,
    StepUpdate,
    StoreSize,
    WorkerJobsReconciled,
    WorkerRecord,
    WorkerTokenRecord,
)
from headwater.core.status import Channel, JobStatus, LogStream, PauseKind, StepStatus
from headwater.errors import HeadwaterError
from headwater.store.notify import Subscription
from headwater.store.roles import (
    DeadLetterStore,
    FlowStore,
    GatherStore,
    JobStore,
    LeaseStore,
    LogStore,
    StateStore,
    StoreLifecycle,
    UpkeepStore,
    WakeUps,
    WorkerStore,
    WorkflowStore,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "NO_FLOW",
    "Channel",
    "ConcurrencyStrategy",
    "CursorRecord",
    "DeadLetterStore",
    "FlowStore",
    "GatherStore",
    "InsertOutcome",
    "JobFilter",
    "JobFlow",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "Lease",
    "LeaseStore",
    "LogLine",
    "LogRecord",
    "LogStore",
    "LogStream",
    "NewJob",
    "PauseKind",
    "PausedRecord",
    "PruneCounts",
    "RecoveredJob",
    "RejectedEvent",
    "StateRecord",
    "StateStore",
    "StepRecord",
    "StepStatus",
    "StepUpdate",
    "Store",
    "StoreLifecycle",
    "StoreSize",
    "Subscription",
    "UpkeepStore",
    "WakeUps",
    "WorkerJobsReconciled",
    "WorkerRecord",
    "WorkerStore",
    "WorkerTokenRecord",
    "WorkflowStore",
]


class Store(
    StoreLifecycle,
    JobStore,
    LogStore,
    WorkerStore,
    DeadLetterStore,
    StateStore,
    UpkeepStore,
    LeaseStore,
    GatherStore,
    WakeUps,
    FlowStore,
    WorkflowStore,
):
    """Durable state. Every method is one transaction unless said otherwise.

    The union of the roles in ``store.roles``; what needs more than one role lives here."""

    # -- approvals that timed out (jobs and logs) ------------------------------------
    async def expire_approvals(self) -> list[RecoveredJob]:
        """Fail the approval steps nobody decided in time; their jobs resume on a worker
        (which then treats the step as any failed step)."""
        expired: list[RecoveredJob] = []
        now = datetime.now(UTC)
        for job_id, step, _ in await self.due_approvals(now):
            error = "approval timed out: nobody approved or rejected it in time"
            try:
                job = await self.decide_step(job_id, step, StepStatus.FAILED, None, error)
            except HeadwaterError:  # decided or cancelled meanwhile
                continue
            reason = f"step {step!r}: {error}"
            await self.append_logs([LogLine(job_id, step, LogStream.SYSTEM, reason, now)])
            expired.append(RecoveredJob(job_id, job.task, True, reason))
        return expired
