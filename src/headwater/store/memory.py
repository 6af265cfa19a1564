"""``InMemoryStore``: the whole Store contract in process memory, for tests.

It keeps SqlStore's semantics (the store contract tests run on it too): time-ordered ids,
dedup keys unique across and inside batches, claims oldest first by tag signature, finishes
fenced by owner and carrying their steps only when they change the job, cancel, recovery,
leases with fencing tokens, versioned state, cursors, dead letters, logs with an
increasing ``seq``, retention and wake-ups. Values are stored as JSON (encoded by the same
strict encoder as SqlStore), so a caller never shares a mutable object with the store.

One process only: wake-ups do not cross processes (SqlStore on PostgreSQL does). Not
thread-safe: drive it from one event loop. Public as ``headwater.testing.InMemoryStore``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from headwater.errors import ConflictError, NotFoundError
from headwater.store.base import (
    NO_FLOW,
    Channel,
    CursorRecord,
    InsertOutcome,
    JobFilter,
    JobFlow,
    JobRecord,
    JobStatus,
    Lease,
    LogLine,
    LogRecord,
    LogStream,
    NewJob,
    PauseKind,
    RecoveredJob,
    RejectedEvent,
    StateRecord,
    StepRecord,
    StepStatus,
    StepUpdate,
    Store,
    Subscription,
    WorkerJobsReconciled,
    WorkerRecord,
    WorkerTokenRecord,
)
from headwater.store.fastpath import hint
from headwater.store.flow import WakeTimer, plan_in_memory
from headwater.store.ids import UuidV7Generator, tag_signature, utcnow
from headwater.store.jsoncopy import json_copy as _copy
from headwater.store.memory_approval import MemoryApprovalOps
from headwater.store.memory_flow import MemoryFlowOps
from headwater.store.memory_gather import MemoryGatherOps
from headwater.store.memory_ops import MemoryOps
from headwater.store.memory_workflow import MemoryWorkflowOps
from headwater.store.notify import Broadcaster

__all__ = ["InMemoryStore"]

_LOST_STEP_ERROR = "interrupted: worker lost"
_ORPHAN_STEP_ERROR = "interrupted: the worker never received this job"
_LIVE = (JobStatus.PENDING, JobStatus.RUNNING)


def _step(job_id: str, s: StepUpdate) -> StepRecord:
    return StepRecord(
        job_id=job_id,
        name=s.name,
        action=s.action,
        status=StepStatus(s.status),
        exit_code=s.exit_code,
        output=_copy(s.output),
        error=s.error,
        attempts=s.attempts,
        started_at=s.started_at,
        finished_at=s.finished_at,
    )


class InMemoryStore(
    MemoryApprovalOps, MemoryOps, MemoryFlowOps, MemoryGatherOps, MemoryWorkflowOps, Store
):
    """The Store in memory. ``jobs``, ``steps``, ``logs``… are plain attributes a test may
    read; write through the Store methods so wake-ups and invariants hold."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.steps: dict[str, dict[str, StepRecord]] = {}
        self.logs: list[LogRecord] = []
        self.workers: dict[str, WorkerRecord] = {}
        self.tokens: dict[str, WorkerTokenRecord] = {}
        self.rejected: dict[int, RejectedEvent] = {}
        self.cursors: dict[str, CursorRecord] = {}
        self.state: dict[tuple[str, str], StateRecord] = {}
        self.leases: dict[str, Lease] = {}
        self.paused: dict[PauseKind, dict[str, datetime]] = {}
        self.gather_buffers = {}
        self.gather_seen = {}
        self.flows: dict[str, tuple[int, JobFlow]] = {}  # job id → (priority, flow limits)
        self.workflow_records = {}
        self.workflow_messages = {}
        self.workflow_events = {}
        self.workflow_waits = {}
        self.closed = False
        self._broadcaster = Broadcaster()
        self._rate_wake = WakeTimer(self._broadcaster.publish)
        self._new_id = UuidV7Generator()
        self._seq = 0
        self._rejected_seq = 0

    # -- plumbing ------------------------------------------------------------------------
    def _publish(self, channel: Channel, payloads: Iterable[str]) -> None:
        for payload in payloads:
            self._broadcaster.publish(channel.value, payload)

    def _log(
        self, job_id: str, step: str | None, stream: LogStream, line: str, ts: datetime
    ) -> None:
        self._seq += 1
        self.logs.append(LogRecord(self._seq, job_id, step, LogStream(stream), line, ts))

    def _with_steps(self, job: JobRecord) -> JobRecord:
        steps = sorted(
            self.steps.get(job.id, {}).values(),
            key=lambda s: (
                s.started_at is None,
                s.started_at.timestamp() if s.started_at is not None else 0.0,
                s.name,
            ),
        )
        return dataclasses.replace(job, steps=tuple(steps))

    def _interrupt_steps(self, job_id: str, error: str, now: datetime) -> None:
        for name, s in self.steps.get(job_id, {}).items():
            if s.status is StepStatus.RUNNING:
                self.steps[job_id][name] = dataclasses.replace(
                    s, status=StepStatus.FAILED, error=error, finished_at=now
                )

    # -- lifecycle -----------------------------------------------------------------------
    async def migrate(self) -> None:
        return None

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._rate_wake.cancel()
            self._broadcaster.close_all()

    # -- jobs ----------------------------------------------------------------------------
    async def insert_jobs(
        self, jobs: Sequence[NewJob], cursor: tuple[str, str] | None = None
    ) -> list[InsertOutcome]:
        now = utcnow()
        # Encode everything first: a bad value fails the whole batch, as one transaction.
        inputs = [_copy(dict(job.input)) for job in jobs]
        new_ids = self._new_id.take(len(jobs))
        by_key = {j.dedup_key: j.id for j in self.jobs.values() if j.dedup_key is not None}
        outcomes: list[InsertOutcome] = []
        signatures: set[str] = set()
        for job, job_input, new_id in zip(jobs, inputs, new_ids, strict=True):
            key = job.dedup_key
            if key is not None and key in by_key:
                outcomes.append(InsertOutcome(by_key[key], created=False))
                continue
            if job.id is not None and job.id in self.jobs:
                outcomes.append(InsertOutcome(job.id, created=False))
                continue
            record = JobRecord(
                id=job.id or new_id,
                workspace=job.workspace,
                task=job.task,
                status=JobStatus.PENDING,
                input=job_input,
                output=None,
                error=None,
                source_type=job.source_type,
                source_id=job.source_id,
                dedup_key=key,
                tags=frozenset(job.tags),
                parent_job_id=job.parent_job_id,
                worker_id=None,
                attempt=0,
                max_attempts=job.max_attempts,
                cancel_requested=False,
                created_at=now,
                started_at=None,
                finished_at=None,
            )
            self.jobs[record.id] = record
            self.steps[record.id] = {}
            if job.priority or job.flow.limited:
                self.flows[record.id] = (job.priority, job.flow)
            if key is not None:
                by_key[key] = record.id
            signatures.add(tag_signature(record.tags))
            outcomes.append(InsertOutcome(record.id, created=True))
        if cursor is not None:
            await self.save_cursor(*cursor)
        self._publish(Channel.JOBS, (hint([s]) for s in sorted(signatures)))
        return outcomes

    async def get_job(self, job_id: str) -> JobRecord | None:
        job = self.jobs.get(job_id)
        return None if job is None else self._with_steps(job)

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        return [self.jobs[i] for i in dict.fromkeys(job_ids) if i in self.jobs]

    async def list_jobs(self, flt: JobFilter) -> list[JobRecord]:
        if flt.id_prefix:  # in id order, the keyset on the id alone (as the SQL stores)
            found = [
                j
                for j in await self.list_jobs(
                    dataclasses.replace(flt, id_prefix=None, before_id=None, limit=len(self.jobs))
                )
                if j.id.startswith(flt.id_prefix)
                and (flt.before_id is None or j.id < flt.before_id)
            ]
            found.sort(key=lambda j: j.id, reverse=True)
            return found[: max(flt.limit, 0)]
        anchor = self.jobs.get(flt.before_id) if flt.before_id is not None else None
        if flt.before_id is not None and anchor is None:
            return []

        def keep(j: JobRecord) -> bool:
            return (
                (flt.task is None or j.task == flt.task)
                and (flt.status is None or j.status == flt.status)
                and (flt.source_type is None or j.source_type == flt.source_type)
                and (flt.source_id is None or j.source_id == flt.source_id)
                and (flt.workspace is None or j.workspace == flt.workspace)
                and (flt.parent_job_id is None or j.parent_job_id == flt.parent_job_id)
                and (flt.created_after is None or j.created_at >= flt.created_after)
                and (flt.created_before is None or j.created_at < flt.created_before)
                and (anchor is None or (j.created_at, j.id) < (anchor.created_at, anchor.id))
            )

        found = sorted(
            (j for j in self.jobs.values() if keep(j)),
            key=lambda j: (j.created_at, j.id),
            reverse=True,
        )
        return found[: max(flt.limit, 0)]

    async def claim_jobs(
        self, worker_id: str, tag_signatures: Sequence[str], limit: int
    ) -> list[JobRecord]:
        if limit <= 0 or not tag_signatures:
            return []
        paused = self.paused_tasks()
        # pause: the claim's one predicate for it (a flow key belongs to one task)
        candidates = [j for j in self.jobs.values() if j.task not in paused]
        now = utcnow()
        plan = plan_in_memory(candidates, self.flows, set(tag_signatures), limit, now)
        for job_id, reason in plan.skip.items():
            self.jobs[job_id] = dataclasses.replace(
                self.jobs[job_id], status=JobStatus.CANCELLED, error=reason, finished_at=now
            )
            self._log(job_id, None, LogStream.SYSTEM, reason, now)
        self._publish(Channel.FINISHED, plan.skip)
        self._rate_wake.wake_at(plan.retry_at)
        for key, reason in plan.cancel_keys.items():
            for job in list(self.jobs.values()):
                flow = self.flows.get(job.id, (0, NO_FLOW))[1]
                if (
                    flow.concurrency_key == key
                    and job.status is JobStatus.RUNNING
                    and job.worker_id is not None
                    and not job.cancel_requested
                ):
                    self.jobs[job.id] = dataclasses.replace(job, cancel_requested=True)
                    self._log(job.id, None, LogStream.SYSTEM, reason, now)
                    self._publish(Channel.CANCEL, [job.id])
        claimed: list[JobRecord] = []
        for job_id in plan.claim:
            job = self.jobs[job_id]
            job = dataclasses.replace(
                job,
                status=JobStatus.RUNNING,
                worker_id=worker_id,
                attempt=job.attempt + 1,
                started_at=now,
            )
            self.jobs[job.id] = job
            claimed.append(self._with_steps(job))
        claimed.sort(key=lambda j: (j.created_at, j.id))
        return claimed

    def _finish(
        self, job_id: str, worker_id: str | None, status: JobStatus, output: Any, error: str | None
    ) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status not in _LIVE:
            return False
        if worker_id is not None and job.worker_id != worker_id:
            return False
        self.jobs[job_id] = dataclasses.replace(
            job, status=JobStatus(status), output=_copy(output), error=error, finished_at=utcnow()
        )
        if self.flows.get(job_id, (0, NO_FLOW))[1].concurrency_key is not None:
            self._publish(Channel.JOBS, [hint([tag_signature(job.tags)])])  # room for the next
        return True

    async def finish_job(
        self,
        job_id: str,
        worker_id: str | None,
        status: JobStatus,
        output: Any = None,
        error: str | None = None,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        if not JobStatus(status).is_terminal:
            raise ValueError(f"finish_job needs a final status, not {status!r}")
        records = [_step(job_id, s) for s in {s.name: s for s in steps}.values()]
        _copy(output)  # a bad value fails before anything changes
        changed = self._finish(job_id, worker_id, status, output, error)
        if changed:
            for record in records:
                self.steps.setdefault(job_id, {})[record.name] = record
            self._publish(Channel.FINISHED, [job_id])
        return changed

    async def finish_jobs(
        self, results: Sequence[tuple[str, str | None, JobStatus, Any, str | None]]
    ) -> list[bool]:
        for r in results:
            if not JobStatus(r[2]).is_terminal:
                raise ValueError(f"finish_job needs a final status, not {r[2]!r}")
            _copy(r[3])
        changed = [self._finish(*r) for r in results]
        done = sorted({r[0] for r, c in zip(results, changed, strict=True) if c})
        if done:
            self._publish(Channel.FINISHED, [hint(done)])
        return changed

    async def upsert_steps(self, job_id: str, steps: Sequence[StepUpdate]) -> None:
        if not steps:
            return
        if job_id not in self.jobs:
            raise NotFoundError(f"job {job_id} not found")
        records = [_step(job_id, s) for s in {s.name: s for s in steps}.values()]
        for record in records:
            self.steps.setdefault(job_id, {})[record.name] = record

    async def release_job(
        self,
        job_id: str,
        worker_id: str,
        tags: frozenset[str],
        reason: str,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        await self.upsert_steps(job_id, steps)
        job = self.jobs[job_id]
        if job.status is not JobStatus.RUNNING or job.worker_id != worker_id:
            return False
        self.jobs[job_id] = dataclasses.replace(
            job,
            status=JobStatus.PENDING,
            worker_id=None,
            tags=frozenset(tags),
            error=reason,
            attempt=max(0, job.attempt - 1),
        )
        self._publish(Channel.JOBS, [hint([tag_signature(tags)])])
        return True

    async def request_cancel(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        if job.status not in _LIVE:
            raise ConflictError(f"job {job_id} is already {job.status.value}")
        at_once = job.status is JobStatus.PENDING or job.worker_id is None  # or suspended
        if at_once:
            for name, st in self.steps.get(job_id, {}).items():
                if st.status is StepStatus.SUSPENDED:
                    self.steps[job_id][name] = dataclasses.replace(
                        st,
                        status=StepStatus.CANCELLED,
                        error="job cancelled",
                        finished_at=utcnow(),
                        timeout_at=None,
                    )
        job = dataclasses.replace(
            job,
            status=JobStatus.CANCELLED if at_once else job.status,
            finished_at=utcnow() if at_once else job.finished_at,
            cancel_requested=True,
        )
        self.jobs[job_id] = job
        self._publish(Channel.FINISHED if at_once else Channel.CANCEL, [job_id])
        return self._with_steps(job)

    async def count_in_flight(self, source_id: str) -> int:
        return sum(1 for j in self.jobs.values() if j.source_id == source_id and j.status in _LIVE)

    async def count_jobs_by_status(
        self, statuses: Collection[JobStatus] | None = None
    ) -> dict[str, int]:
        wanted = list(JobStatus) if statuses is None else list(statuses)
        counts = {status.value: 0 for status in wanted}
        for j in self.jobs.values():
            if j.status.value in counts:
                counts[j.status.value] += 1
        return counts

    # -- logs ----------------------------------------------------------------------------
    async def append_logs(self, lines: Sequence[LogLine]) -> None:
        for ln in lines:
            self._log(ln.job_id, ln.step, ln.stream, ln.line, ln.ts)
        self._publish(Channel.LOGS, dict.fromkeys(ln.job_id for ln in lines))

    async def get_logs(
        self, job_id: str, after_seq: int = 0, limit: int = 1000, step: str | None = None
    ) -> list[LogRecord]:
        found = [
            r
            for r in self.logs
            if r.job_id == job_id and r.seq > after_seq and (step is None or r.step == step)
        ]
        return found[: max(limit, 0)]

    # -- workers and recovery ------------------------------------------------------------
    async def register_worker(self, worker_id: str, name: str, tags: frozenset[str]) -> None:
        now = utcnow()
        self.workers[worker_id] = WorkerRecord(worker_id, name, frozenset(tags), now, now)

    async def heartbeat(self, worker_id: str) -> list[str]:
        worker = self.workers.get(worker_id)
        if worker is not None:
            self.workers[worker_id] = dataclasses.replace(worker, last_heartbeat=utcnow())
        return [
            j.id
            for j in self.jobs.values()
            if j.worker_id == worker_id and j.status is JobStatus.RUNNING and j.cancel_requested
        ]

    async def deregister_worker(self, worker_id: str) -> None:
        self.workers.pop(worker_id, None)

    async def list_workers(self) -> list[WorkerRecord]:
        return sorted(self.workers.values(), key=lambda w: (w.started_at, w.id))

    async def recover_stale_jobs(self, stale_after: float) -> list[RecoveredJob]:
        # Approval steps past their timeout are failed by the same sweep.
        return [*await self._recover_stale(stale_after), *await self.expire_approvals()]

    async def _recover_stale(self, stale_after: float) -> list[RecoveredJob]:
        now = utcnow()
        cutoff = now - timedelta(seconds=stale_after)

        def silent(job: JobRecord) -> bool:
            worker = self.workers.get(job.worker_id) if job.worker_id is not None else None
            return worker is None or worker.last_heartbeat < cutoff

        stale = sorted(
            (
                j
                for j in self.jobs.values()
                if j.status is JobStatus.RUNNING and j.worker_id is not None and silent(j)
            ),
            key=lambda j: (j.created_at, j.id),
        )
        recovered: list[RecoveredJob] = []
        signatures: set[str] = set()
        ended: list[str] = []
        for job in stale:
            lost = f"worker {job.worker_id or '<none>'} stopped heartbeating"
            self._interrupt_steps(job.id, _LOST_STEP_ERROR, now)
            if job.cancel_requested:
                reason = f"{lost}; cancelled as requested"
                new = dataclasses.replace(
                    job, status=JobStatus.CANCELLED, error=reason, finished_at=now
                )
            elif job.attempt < job.max_attempts:
                reason = f"{lost}; requeued for attempt {job.attempt + 1} of {job.max_attempts}"
                new = dataclasses.replace(job, status=JobStatus.PENDING, worker_id=None)
                signatures.add(tag_signature(job.tags))
            else:
                reason = f"{lost}; gave up after {job.attempt} attempts"
                new = dataclasses.replace(
                    job, status=JobStatus.FAILED, error=reason, finished_at=now
                )
            if new.status.is_terminal:
                ended.append(job.id)
            self.jobs[job.id] = new
            recovered.append(
                RecoveredJob(job.id, job.task, new.status is JobStatus.PENDING, reason)
            )
            self._log(job.id, None, LogStream.SYSTEM, reason, now)
        self._publish(Channel.JOBS, (hint([s]) for s in sorted(signatures)))
        if ended:
            self._publish(Channel.FINISHED, [hint(ended)])
        self._publish(Channel.LOGS, [j.id for j in stale])
        return recovered

    async def reconcile_worker_jobs(
        self, worker_id: str, active: Sequence[str], grace_secs: float
    ) -> WorkerJobsReconciled:
        now = utcnow()
        known = set(active)
        cutoff = now - timedelta(seconds=grace_secs)
        mine = [
            j
            for j in self.jobs.values()
            if j.worker_id == worker_id and j.status is JobStatus.RUNNING
        ]
        running = {j.id for j in mine}
        orphans = [
            j for j in mine if j.id not in known and (j.started_at is None or j.started_at < cutoff)
        ]
        line = f"worker {worker_id} never received this job (lost answer); requeued"
        for job in orphans:
            self.jobs[job.id] = dataclasses.replace(job, status=JobStatus.PENDING, worker_id=None)
            self._interrupt_steps(job.id, _ORPHAN_STEP_ERROR, now)
            self._log(job.id, None, LogStream.SYSTEM, line, now)
        if orphans:
            signatures = sorted({tag_signature(j.tags) for j in orphans})
            self._publish(Channel.JOBS, (hint([s]) for s in signatures))
            self._publish(Channel.LOGS, [j.id for j in orphans])
        lost = tuple(i for i in active if i not in running)
        return WorkerJobsReconciled(requeued=tuple(j.id for j in orphans), lost=lost)

    # -- wake-ups ------------------------------------------------------------------------
    def subscribe(self, channel: Channel) -> Subscription:
        """Payloads published by this store after this call (this process only)."""
        return self._broadcaster.subscribe(Channel(channel).value)
