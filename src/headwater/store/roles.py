"""The Store's roles: one abstract class per concern, ``Store`` is their union.

A component that needs one concern (reading logs, holding a lease) can ask for that role
instead of the whole ``Store``; every ``Store`` (SQL, in-memory, the wrappers) is each of
them. The method declarations and their contracts are here; ``store.base`` joins them.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from headwater.core.gather import BufferedEvent, BufferOutcome, FlushedBuffer
from headwater.core.records import (
    CursorRecord,
    InsertOutcome,
    JobFilter,
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
    StatusBucket,
    StepUpdate,
    StoreSize,
    TaskDurations,
    WorkerJobsReconciled,
    WorkerRecord,
    WorkerTokenRecord,
)
from headwater.core.status import Channel, JobStatus, PauseKind, StepStatus
from headwater.core.workflows import WorkflowStep, WorkflowWait
from headwater.store.notify import Subscription

if TYPE_CHECKING:
    from headwater.store.task_state import TaskStateRecord

__all__ = [
    "MAX_RUNS",
    "DeadLetterStore",
    "FlowStore",
    "GatherStore",
    "JobStore",
    "LeaseStore",
    "LogStore",
    "StateStore",
    "StoreLifecycle",
    "UpkeepStore",
    "WakeUps",
    "WorkerStore",
    "WorkflowStore",
]


# ``task_durations`` reads the run times of the window's newest jobs, at most this many:
# a busy window's percentiles then cost what a quiet one's do.
MAX_RUNS = 10_000


class StoreLifecycle(abc.ABC):
    """Opening the schema and closing the connections."""

    @abc.abstractmethod
    async def migrate(self) -> None:
        """Bring the schema to the newest revision (alembic); safe to call every start."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class JobStore(abc.ABC):
    """Jobs and their steps: insert, read, claim, finish, approvals, cancel, counts."""

    @abc.abstractmethod
    async def insert_jobs(
        self, jobs: Sequence[NewJob], cursor: tuple[str, str] | None = None
    ) -> list[InsertOutcome]:
        """Insert in one transaction; a dedup-key clash returns the existing job's id with
        ``created=False``. Outcomes are in the order of ``jobs``. Wakes ``Channel.JOBS``.
        ``cursor`` (trigger key, value): stored as the event source's last committed
        cursor in the same transaction (also when ``jobs`` is empty)."""

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job with its steps (ordered by start, then name)."""

    @abc.abstractmethod
    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """Several jobs without steps, in no particular order; unknown ids are left out."""

    @abc.abstractmethod
    async def list_jobs(self, flt: JobFilter) -> list[JobRecord]:
        """Newest first, without steps."""

    async def find_job_ids(self, fragment: str, limit: int = 10) -> list[str]:
        """Ids of the jobs whose id starts or ends with ``fragment`` (at most ``limit``),
        for short ids typed by a person. This fallback pages through every job; the SQL
        stores answer with one query."""
        found: list[str] = []
        before: str | None = None
        while len(found) < limit:
            page = await self.list_jobs(JobFilter(limit=1000, before_id=before))
            found.extend(j.id for j in page if j.id.startswith(fragment) or j.id.endswith(fragment))
            if len(page) < 1000:
                break
            before = page[-1].id
        return found[:limit]

    @abc.abstractmethod
    async def claim_jobs(
        self, worker_id: str, tag_signatures: Sequence[str], limit: int
    ) -> list[JobRecord]:
        """Move up to ``limit`` oldest pending jobs whose tag signature (sorted tags joined by
        ',') is one of ``tag_signatures`` to running, owned by ``worker_id``; attempt += 1.
        PostgreSQL uses FOR UPDATE SKIP LOCKED. Returned jobs carry their existing steps
        (a recovered job resumes: completed steps keep their output)."""

    @abc.abstractmethod
    async def finish_job(
        self,
        job_id: str,
        worker_id: str | None,
        status: JobStatus,
        output: Any = None,
        error: str | None = None,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        """Set a final status if the job is not final yet and (when ``worker_id`` is given)
        still owned by that worker. Returns whether it changed. Wakes ``Channel.FINISHED``.

        ``steps``: step states not stored yet (the job's last steps), upserted in the same
        transaction, and only when the finish changed the job: a worker that lost the job
        does not overwrite the steps of whoever has it now."""

    @abc.abstractmethod
    async def finish_jobs(
        self, results: Sequence[tuple[str, str | None, JobStatus, Any, str | None]]
    ) -> list[bool]:
        """Batch form of ``finish_job``: (job_id, worker_id, status, output, error)."""

    @abc.abstractmethod
    async def upsert_steps(self, job_id: str, steps: Sequence[StepUpdate]) -> None: ...

    # -- approval steps ----------------------------------------------------------------
    @abc.abstractmethod
    async def suspend_job(
        self, job_id: str, worker_id: str, waiting: Mapping[str, datetime | None]
    ) -> bool:
        """The worker running the job lets it go while ``waiting`` (step name → timeout
        time or None) wait for a decision: the job stays running with no worker (it holds
        no slot, recovery leaves it alone), each waiting step gets its ``timeout_at``.
        When one of them was decided meanwhile the job goes back to pending instead (so a
        worker resumes it now). False when the job is no longer the worker's."""

    @abc.abstractmethod
    async def decide_step(
        self, job_id: str, step: str, status: StepStatus, output: Any, error: str | None
    ) -> JobRecord:
        """Complete (approve) or fail (reject, time out) the suspended ``step``; a job no
        worker holds goes back to pending so that a worker resumes its flow. Raises
        NotFoundError, or ConflictError when the step is not waiting for a decision."""

    @abc.abstractmethod
    async def due_approvals(self, now: datetime) -> list[tuple[str, str, datetime]]:
        """(job id, step, timeout_at) of suspended steps whose timeout has passed."""

    @abc.abstractmethod
    async def release_job(
        self,
        job_id: str,
        worker_id: str,
        tags: frozenset[str],
        reason: str,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        """Hand a running job of ``worker_id`` on: it becomes pending for workers with
        ``tags`` (its next step's), ``error`` says what it waits for, its steps so far
        stay (the next worker resumes after them) and the claim is not counted as an
        attempt. Wakes ``Channel.JOBS``. False when the worker no longer owns it."""

    @abc.abstractmethod
    async def request_cancel(self, job_id: str) -> JobRecord:
        """Pending → cancelled at once; running → ``cancel_requested`` and a
        ``Channel.CANCEL`` wake-up (the owning worker stops its processes and finishes the
        job as cancelled). Raises NotFoundError / ConflictError (already final)."""

    @abc.abstractmethod
    async def count_in_flight(self, source_id: str) -> int:
        """Jobs of this source that are pending or running."""

    @abc.abstractmethod
    async def count_jobs_by_status(
        self, statuses: Collection[JobStatus] | None = None
    ) -> dict[str, int]:
        """Jobs per status, every status of ``statuses`` (all when None) present, 0
        when none. The live ones (pending, running) are read from the queue's and the
        status index alone, so counting only them costs the same at a million jobs as at
        a hundred; counting the finished ones reads their whole index."""

    @abc.abstractmethod
    async def count_source(self, source_id: str) -> int:
        """Every job of this source, whatever its status (events accepted)."""

    @abc.abstractmethod
    async def job_activity(self, since: datetime, bucket_secs: int) -> list[StatusBucket]:
        """Jobs created at or after ``since`` per ``bucket_secs``-long bucket (aligned on
        the Unix epoch) and current status; only non-empty buckets, oldest first. Reads
        only the window (the ``created_at`` index), however many jobs the store keeps."""

    @abc.abstractmethod
    async def task_durations(self, since: datetime, limit: int) -> list[TaskDurations]:
        """Per task, its jobs created at or after ``since`` (the newest ``MAX_RUNS`` of
        them) that ran and finished: the ``limit`` tasks with the highest p95 run time
        first."""


class FlowStore(abc.ABC):
    """Flow control an operator sets: paused tasks and triggers, re-runs from a step."""

    @abc.abstractmethod
    async def set_paused(self, kind: PauseKind, name: str, paused: bool) -> bool:
        """Pause (a row in ``paused_tasks``/``paused_triggers``) or resume ``name``;
        whether that changed anything. A paused task's pending jobs are not claimed
        (``claim_jobs``); resuming a task wakes ``Channel.JOBS`` so workers claim them."""

    @abc.abstractmethod
    async def list_paused(self, kind: PauseKind | None = None) -> list[PausedRecord]:
        """What is paused (of ``kind``, or both), by kind then name."""

    @abc.abstractmethod
    async def insert_job_with_steps(self, job: NewJob, steps: Sequence[StepUpdate]) -> str:
        """Insert one new job (no dedup key) with ``steps`` already stored, in one
        transaction, so no worker can claim it before they are there: a re-run from a
        step, whose earlier steps keep their outputs. Returns its id; wakes
        ``Channel.JOBS``."""


class LogStore(abc.ABC):
    """A job's log lines."""

    @abc.abstractmethod
    async def append_logs(self, lines: Sequence[LogLine]) -> None:
        """One transaction for the batch; wakes ``Channel.LOGS`` once per job."""

    @abc.abstractmethod
    async def get_logs(
        self, job_id: str, after_seq: int = 0, limit: int = 1000, step: str | None = None
    ) -> list[LogRecord]: ...


class WorkerStore(abc.ABC):
    """Workers, their heartbeats and recovery, and the worker tokens."""

    @abc.abstractmethod
    async def register_worker(self, worker_id: str, name: str, tags: frozenset[str]) -> None: ...

    @abc.abstractmethod
    async def heartbeat(self, worker_id: str) -> list[str]:
        """Refresh the worker's heartbeat; returns ids of its running jobs whose cancel
        was requested."""

    @abc.abstractmethod
    async def deregister_worker(self, worker_id: str) -> None: ...

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerRecord]: ...

    @abc.abstractmethod
    async def recover_stale_jobs(self, stale_after: float) -> list[RecoveredJob]:
        """Running jobs whose worker has not heartbeated for ``stale_after`` seconds (or is
        unknown): back to pending when attempts remain, failed otherwise. Their running
        steps are marked failed with the reason. (A suspended job has no worker and is
        left alone; ``expire_approvals`` runs next to this.)"""

    @abc.abstractmethod
    async def reconcile_worker_jobs(
        self, worker_id: str, active: Sequence[str], grace_secs: float
    ) -> WorkerJobsReconciled:
        """Compare the jobs a (remote) worker says it runs with the store. A running job
        of the worker that it does not know and that was claimed more than ``grace_secs``
        ago (its claim answer was lost) goes back to pending; ids the worker runs that are
        not running as its anymore are returned as ``lost`` (the worker stops them)."""

    # -- worker tokens ---------------------------------------------------------------
    @abc.abstractmethod
    async def insert_worker_token(self, token: WorkerTokenRecord) -> None: ...

    @abc.abstractmethod
    async def get_worker_token(self, token_id: str) -> WorkerTokenRecord | None: ...

    @abc.abstractmethod
    async def list_worker_tokens(self) -> list[WorkerTokenRecord]:
        """Oldest first, revoked ones included."""

    @abc.abstractmethod
    async def revoke_worker_token(self, token_id: str) -> bool:
        """Refuse the token from now on; False when there is no live token with that id."""

    @abc.abstractmethod
    async def touch_worker_token(self, token_id: str) -> None:
        """Record that the token was just used (``last_used_at``)."""


class DeadLetterStore(abc.ABC):
    """Rejected events (the dead letters) and their replay."""

    @abc.abstractmethod
    async def insert_rejected(self, events: Sequence[RejectedEvent]) -> None:
        """Idempotent by dedup key when set."""

    @abc.abstractmethod
    async def list_rejected(
        self, source_id: str | None = None, limit: int = 100, pending_only: bool = False
    ) -> list[RejectedEvent]:
        """Newest first; ``pending_only`` leaves out the ones already replayed."""

    @abc.abstractmethod
    async def count_rejected(self, source_id: str) -> int: ...

    @abc.abstractmethod
    async def get_rejected(self, ids: Sequence[int]) -> list[RejectedEvent]:
        """The dead letters with these ids (missing ids are left out), in id order."""

    @abc.abstractmethod
    async def mark_replayed(self, rejected_id: int, job_id: str) -> None:
        """Record that a dead letter became job ``job_id``."""


class StateStore(abc.ABC):
    """Durable state of components: event-source cursors, state documents, task state."""

    # -- event-source cursors ---------------------------------------------------------
    @abc.abstractmethod
    async def save_cursor(self, trigger: str, cursor: str) -> None: ...

    @abc.abstractmethod
    async def get_cursor(self, trigger: str) -> CursorRecord | None: ...

    @abc.abstractmethod
    async def list_cursors(self) -> list[CursorRecord]: ...

    # -- component state (DBOS's get/upsertEventDispatchState) ------------------------
    @abc.abstractmethod
    async def get_state(self, namespace: str, key: str) -> StateRecord | None: ...

    @abc.abstractmethod
    async def list_state(self, namespace: str) -> list[StateRecord]: ...

    @abc.abstractmethod
    async def put_state(
        self,
        namespace: str,
        key: str,
        value: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> StateRecord:
        """Write ``value``. ``expected_version`` None: unconditionally; 0: only if absent;
        n: only if the stored version is n. Otherwise raises ConflictError. The new
        version is the old one plus one."""

    @abc.abstractmethod
    async def delete_state(self, namespace: str, key: str) -> None: ...

    # -- task state between runs (Strøm's snapshots; kept in the state documents) ------
    async def get_task_state(self, workspace: str, task: str | None) -> TaskStateRecord | None:
        """The current snapshot of ``task`` (None: the workspace's global state)."""
        from headwater.store.task_state import load_task_state

        return await load_task_state(self, workspace, task)

    async def save_task_state(self, snapshot: TaskStateRecord) -> None:
        """Replace the current snapshot (the last writer wins)."""
        from headwater.store.task_state import save_task_state

        await save_task_state(self, snapshot)


class UpkeepStore(abc.ABC):
    """Retention and size."""

    @abc.abstractmethod
    async def prune_jobs(
        self, status: JobStatus, before: datetime, limit: int, dry_run: bool = False
    ) -> PruneCounts:
        """Delete up to ``limit`` jobs of a final ``status`` that finished before
        ``before`` (oldest first), with their steps and logs, in one transaction. A dry run
        counts every such job instead and deletes nothing. Never touches live jobs."""

    @abc.abstractmethod
    async def prune_logs(self, before: datetime, limit: int, dry_run: bool = False) -> int:
        """Delete up to ``limit`` of the oldest log lines written before ``before``; 0
        when the oldest line is newer (a dry run counts them all)."""

    @abc.abstractmethod
    async def prune_rejected(self, before: datetime, limit: int, dry_run: bool = False) -> int:
        """Delete up to ``limit`` of the oldest rejected events stored before ``before``."""

    @abc.abstractmethod
    async def store_size(self) -> StoreSize: ...


class GatherStore(abc.ABC):
    """A trigger's debounce and batch: events buffered per (trigger, key), flushed into
    one job each (``headwater.workspace.flow``)."""

    @abc.abstractmethod
    async def buffer_events(
        self, events: Sequence[BufferedEvent], cursor: tuple[str, str] | None = None
    ) -> list[BufferOutcome]:
        """Store the events in their buffers (opened, counted, due time moved by each
        event's rule) in one transaction, with ``cursor`` as ``insert_jobs`` does. An event
        whose dedup key its trigger buffered already, or that a job of that key exists for,
        is a duplicate and is not stored again. Outcomes are in the order of ``events``."""

    @abc.abstractmethod
    async def flush_buffers(self, now: datetime, limit: int = 100) -> list[FlushedBuffer]:
        """Turn up to ``limit`` buffers due at ``now`` into one pending job each, input
        ``{"events": [their inputs, oldest first], "key": key}`` (at most the rule's
        size; the rest stay buffered). Per buffer ONE transaction creates the job and
        marks its events, so a crash leaves either both or neither. PostgreSQL claims
        buffers with FOR UPDATE SKIP LOCKED: several servers never flush one twice.
        Wakes ``Channel.JOBS``."""

    @abc.abstractmethod
    async def next_buffer_due(self) -> datetime | None:
        """The earliest due time of any buffer (None: nothing is buffered)."""

    @abc.abstractmethod
    async def count_buffered(self, source_id: str) -> int:
        """Events of this trigger waiting in its buffers."""


class LeaseStore(abc.ABC):
    """Leases: one holder per name, with fencing tokens."""

    @abc.abstractmethod
    async def acquire_lease(self, name: str, owner: str, ttl_secs: float) -> Lease | None:
        """Take ``name`` if it is free, expired or already ``owner``'s (then renewed, same
        token); None while another owner holds it. A new holder gets token + 1."""

    @abc.abstractmethod
    async def renew_lease(self, name: str, owner: str, token: int, ttl_secs: float) -> bool:
        """Extend a lease still held with ``token``; False when it was lost."""

    @abc.abstractmethod
    async def release_lease(self, name: str, owner: str, token: int) -> None:
        """Give the lease up at once (it expires now; the next holder gets token + 1)."""

    @abc.abstractmethod
    async def list_leases(self, prefix: str = "") -> list[Lease]: ...


class WakeUps(abc.ABC):
    """Wake-ups between components (and processes, on PostgreSQL)."""

    @abc.abstractmethod
    def subscribe(self, channel: Channel) -> Subscription:
        """Payloads published on ``channel`` after this call, from this process and (on
        PostgreSQL) from every other process. Close the subscription when done."""


class WorkflowStore(abc.ABC):
    """Durable Python workflows (``headwater.sdk.workflows``): a workflow run is a job;
    its step records, messages, events and waits are keyed by the job's id."""

    @abc.abstractmethod
    async def find_workflow(self, workflow_id: str) -> JobRecord | None:
        """The job of a workflow: the one whose dedup key is ``workflow_id``, else the
        job with that id."""

    @abc.abstractmethod
    async def workflow_steps(self, job_id: str) -> list[WorkflowStep]:
        """The recorded calls of a workflow, in call order."""

    @abc.abstractmethod
    async def record_workflow_step(self, job_id: str, step: WorkflowStep) -> WorkflowStep:
        """Record ``step``; when its ``seq`` is recorded already (another run of the same
        workflow got there first) nothing changes and that record is returned."""

    @abc.abstractmethod
    async def run_transaction_step(
        self, job_id: str, step: WorkflowStep, body: Any
    ) -> WorkflowStep:
        """``await body(session)`` on a session of the store's database, then record
        ``step`` (its output: what ``body`` returned) in the same transaction: the body's
        writes and the record commit together or not at all. A ``seq`` recorded already
        returns that record without calling ``body``."""

    @abc.abstractmethod
    async def send_workflow_message(
        self,
        job_id: str,
        topic: str,
        message: Any,
        sender: tuple[str, WorkflowStep] | None = None,
    ) -> WorkflowStep | None:
        """Queue ``message`` for workflow job ``job_id`` and wake it if it waits on
        ``topic``. ``sender``: (job id, step) of a workflow sending it, recorded in the same
        transaction (a replay sends nothing: the recorded step is returned)."""

    @abc.abstractmethod
    async def receive_workflow_message(
        self, job_id: str, topic: str, step: WorkflowStep
    ) -> WorkflowStep | None:
        """Take the oldest message on ``topic`` and record ``step`` with it as output, in
        one transaction; None when there is none (and ``step`` is not recorded)."""

    @abc.abstractmethod
    async def set_workflow_event(
        self, job_id: str, key: str, value: Any, step: WorkflowStep
    ) -> WorkflowStep:
        """Publish ``value`` under ``key`` and record ``step``, in one transaction; wakes
        the workflows waiting for it."""

    @abc.abstractmethod
    async def get_workflow_event(self, job_id: str, key: str) -> tuple[bool, Any]:
        """(found, value) of an event of workflow job ``job_id``."""

    @abc.abstractmethod
    async def wait_workflow(self, wait: WorkflowWait) -> None:
        """Note what the workflow will wait for once its worker lets it go (replaces any
        earlier wait of the job)."""

    @abc.abstractmethod
    async def wake_workflows(self, now: datetime) -> list[str]:
        """Put back in the queue the let-go workflows whose wait is over (time reached,
        message or event arrived); their ids."""

    @abc.abstractmethod
    async def next_workflow_wake(self) -> datetime | None:
        """The earliest ``wake_at`` of the waiting workflows."""
