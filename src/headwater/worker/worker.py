"""The claim loop: wake on new jobs, claim up to the free slots, run, record, repeat.

No sleep-polling: the worker waits on the store's ``Channel.JOBS`` wake-up (in-process
on SQLite, LISTEN/NOTIFY on PostgreSQL) and on a freed slot. A long safety timeout only
guards against a lost notification. Heartbeats carry cancel requests; a recovery sweep
requeues the jobs of workers that stopped heartbeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from headwater import jsonsafe
from headwater.engine.control import ControlPlane
from headwater.engine.executor import JobExecutor, JobOutcome
from headwater.engine.logwriter import LogWriter
from headwater.runners.identity import pid_alive
from headwater.store.base import Channel, JobRecord, JobStatus, LogLine, LogStream
from headwater.store.notify import Subscription
from headwater.workspace.models import Workspace

__all__ = ["Worker", "WorkerSettings", "worker_name"]

log = structlog.get_logger(__name__)


def worker_name() -> str:
    """``host:pid``: lets a restarted process see that a previous one on this host is gone."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    concurrency: int = 8
    heartbeat_interval: float = 2.0
    stale_after: float = 10.0  # a worker silent this long loses its jobs
    recovery_interval: float = 5.0
    shutdown_timeout: float = 5.0  # running jobs may finish this long before being stopped
    safety_wakeup: float = 5.0  # re-check for work even without a notification


class _Active:
    __slots__ = ("cancel", "consumer", "finishing", "interrupted", "job", "task")

    def __init__(self, job: JobRecord, consumer: bool) -> None:
        self.job = job
        self.cancel = asyncio.Event()
        self.interrupted = False  # stopped by shutdown: leave it for recovery
        self.finishing = False  # ran to its end; only its finish is being stored
        self.consumer = consumer
        self.task: asyncio.Task[None] | None = None


class Worker:
    def __init__(
        self,
        control: ControlPlane,  # the Store itself (embedded) or a server (HttpControlPlane)
        executor: JobExecutor,
        logs: LogWriter,
        workspace: Callable[[], Workspace],
        tag_signatures: Callable[[], Sequence[str]],
        settings: WorkerSettings = WorkerSettings(),
        is_long_running: Callable[[JobRecord], bool] = lambda job: False,
        worker_id: str | None = None,
        on_finished: Callable[[JobRecord, JobStatus], Awaitable[None]] | None = None,
        on_suspended: Callable[[JobRecord, Sequence[str]], Awaitable[None]] | None = None,
        on_claimed: Callable[[Sequence[JobRecord]], None] | None = None,
        on_store_error: Callable[[str], None] | None = None,
        tags: frozenset[str] | None = None,
    ) -> None:
        self.control = control
        # The tags this worker has: a step that needs others is handed on (None: it runs
        # every step, as ``headwater run`` does).
        self.tags = tags
        self._on_finished = on_finished
        self._on_suspended = on_suspended
        # Metrics: told the jobs of each claim, and the operation of each store failure.
        self._on_claimed = on_claimed
        self._on_store_error = on_store_error
        self.executor = executor
        self.logs = logs
        self._workspace = workspace
        self._tag_signatures = tag_signatures
        self.settings = settings
        self._is_long_running = is_long_running
        self.id = worker_id or f"w-{uuid.uuid4().hex[:12]}"
        self.name = worker_name()
        self._active: dict[str, _Active] = {}
        # Jobs that ran to their end and are storing their finish: their slot is free
        # already, so the next job's claim and start overlap that commit.
        self._finishing = 0
        self._claiming = 0  # slots reserved by claims on their way
        self._drained = False  # the last claim came back short: the queue was empty
        self._handing = 0  # hand-offs reserved (store.handoff) whose insert is on its way
        self._accepting = False  # whether new jobs may be handed to idle slots
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._job_context: contextvars.Context | None = None  # set by run()
        self.ready = asyncio.Event()

    @property
    def active_jobs(self) -> list[str]:
        return list(self._active)

    def look_for_work(self) -> None:
        """Claim now if a slot is free (jobs were requeued in this process)."""
        self._drained = False
        self._slot_freed.set()

    async def run(self, stop: asyncio.Event) -> None:
        await self._forget_dead_local_workers()
        shown = self.tags if self.tags is not None else frozenset(self._tag_signatures())
        await self.control.register_worker(self.id, self.name, shown)
        await self._recover()
        # Jobs start in a copy of this context, not of whoever caused the start: a job
        # handed over by an insert (store.handoff) would otherwise inherit the inserting
        # code's context: a parent workflow's run, a request's log fields and span.
        self._job_context = contextvars.copy_context()
        jobs_sub = self.control.subscribe(Channel.JOBS)
        background = [
            asyncio.create_task(self._heartbeat_loop(stop), name="worker-heartbeat"),
            asyncio.create_task(self._cancel_loop(stop), name="worker-cancel"),
            asyncio.create_task(self._recovery_loop(stop), name="worker-recovery"),
        ]
        self.ready.set()
        self._accepting = True
        log.info("worker_started", worker_id=self.id, concurrency=self.settings.concurrency)
        try:
            await self._claim_loop(stop, jobs_sub)
        finally:
            self._accepting = False
            await self._wait_for_handoffs()
            jobs_sub.close()
            await self._shutdown()
            for t in background:
                t.cancel()
            for t in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await self.control.deregister_worker(self.id)
            log.info("worker_stopped", worker_id=self.id)

    async def _claim_loop(self, stop: asyncio.Event, jobs_sub: Subscription) -> None:
        """Keep every slot busy. A slot that frees up is claimed for at once, also while
        another claim is on its way (on PostgreSQL a claim is a round trip; waiting for
        the one in flight left slots idle for two). Once a claim comes back short the
        queue is empty: the loop waits for a ``Channel.JOBS`` wake-up before asking
        again."""
        stop_wait = asyncio.ensure_future(stop.wait())
        claims: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                free = self.settings.concurrency - self._busy() - self._claiming
                if free > 0 and not self._drained:
                    self._claiming += free
                    claim = asyncio.create_task(self._claim(free), name="worker-claim")
                    claims.add(claim)
                    claim.add_done_callback(claims.discard)
                    continue
                self._slot_freed.clear()
                waiters: list[asyncio.Future[Any]] = [
                    asyncio.ensure_future(self._slot_freed.wait())
                ]
                if free > 0:  # drained: new jobs are announced on Channel.JOBS
                    jobs = asyncio.ensure_future(jobs_sub.wait(self.settings.safety_wakeup))
                    waiters.append(jobs)
                done, _ = await asyncio.wait(
                    [*waiters, stop_wait],
                    timeout=self.settings.safety_wakeup,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if free > 0 and (jobs in done or not done):
                    self._drained = False  # something was enqueued (or it is time to look)
                for w in waiters:
                    w.cancel()
        finally:
            stop_wait.cancel()
            if claims:  # their jobs are started (and then stopped by the shutdown)
                await asyncio.wait(list(claims))

    async def _claim(self, limit: int) -> None:
        """One claim of up to ``limit`` jobs (``limit`` slots are reserved for it)."""
        try:
            claimed = await self.control.claim_jobs(self.id, list(self._tag_signatures()), limit)
        except Exception:
            log.exception("claim_failed", worker_id=self.id)
            self._store_error("claim")
            await asyncio.sleep(1.0)  # keeps its slots reserved: no storm of retries
            self._claiming -= limit
            self._slot_freed.set()
            return
        self._claiming -= limit
        if claimed and self._on_claimed is not None:
            self._on_claimed(claimed)
        for job in claimed:
            self._start(job)
        if len(claimed) < limit:
            self._drained = True
        self._slot_freed.set()

    # -- hand-off (store.handoff): a job inserted in this process, straight to a slot ----
    def reserve(self, signatures: Sequence[str | None]) -> list[int]:
        """Idle slots for new jobs (by tag signature), reserved only while the last claim
        found the queue empty: older jobs of these signatures would be claimed first."""
        if not self._accepting or not self._drained:
            return []
        free = self.settings.concurrency - self._busy() - self._claiming
        if free <= 0:
            return []
        mine = self._tag_signatures()
        picked = [i for i, s in enumerate(signatures) if s is not None and s in mine][:free]
        self._claiming += len(picked)
        self._handing += len(picked)
        return picked

    async def _wait_for_handoffs(self) -> None:
        """Hand-offs whose insert is on its way: their jobs are started before the
        shutdown (a store that stopped answering is waited for only so long)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout
        while self._handing and (left := deadline - loop.time()) > 0:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), left)

    def deliver(self, jobs: Sequence[JobRecord], reserved: int) -> None:
        """Start the jobs committed as this worker's; free the rest of the reservation."""
        self._claiming -= reserved
        self._handing -= reserved
        if jobs and self._on_claimed is not None:
            self._on_claimed(jobs)
        for job in jobs:
            self._start(job)
        self._slot_freed.set()

    def _store_error(self, operation: str) -> None:
        if self._on_store_error is not None:
            self._on_store_error(operation)

    def _busy(self) -> int:
        return len(self._active) - self._finishing

    def _start(self, job: JobRecord) -> None:
        active = _Active(job, self._is_long_running(job))
        if job.cancel_requested:
            active.cancel.set()
        self._active[job.id] = active
        context = self._job_context.copy() if self._job_context is not None else None
        active.task = asyncio.create_task(
            self._execute(active), name=f"job:{job.id}", context=context
        )

    async def _execute(self, active: _Active) -> None:
        job = active.job
        try:
            try:
                outcome = await self.executor.execute(
                    self._workspace(), job, active.cancel, self.tags
                )
            except Exception as exc:
                log.exception("job_crashed", job_id=job.id)
                outcome = JobOutcome(JobStatus.FAILED, None, f"internal error: {exc!r}")
            if active.interrupted:
                # Shutdown stopped it: the next start recovers it (requeue) instead.
                if outcome.steps:
                    await self.control.upsert_steps(job.id, outcome.steps)
                await self.logs.write(
                    LogLine(job.id, None, LogStream.SYSTEM, "interrupted by shutdown", _now())
                )
                return
            if outcome.handoff is not None:
                await self._hand_on(job, outcome)
                return
            active.finishing = True
            self._finishing += 1
            self._slot_freed.set()
            await self.logs.flush()
            if outcome.waiting:
                await self._suspend(job, outcome)
                return
            try:
                changed = await self.control.finish_job(
                    job.id, self.id, outcome.status, outcome.output, outcome.error, outcome.steps
                )
            except Exception as exc:
                if not jsonsafe.is_data_error(exc):
                    raise
                # An output the store cannot keep must not leave the job running (and
                # requeued after every restart): it fails, without its outputs.
                log.error("job_output_unstorable", job_id=job.id, error=str(exc)[:500])
                changed = await self.control.finish_job(
                    job.id,
                    self.id,
                    JobStatus.FAILED,
                    None,
                    f"the job's output cannot be stored: {str(exc)[:500]}",
                    tuple(replace(s, output=None) for s in outcome.steps),
                )
            if not changed:
                log.warning("job_finish_refused", job_id=job.id, worker_id=self.id)
            elif self._on_finished is not None:
                await self._on_finished(job, outcome.status)  # e.g. fire its hooks
        except Exception:
            log.exception("job_finish_failed", job_id=job.id)
            self._store_error("finish")
        finally:
            if active.finishing:
                self._finishing -= 1
            self._active.pop(job.id, None)
            self._slot_freed.set()

    async def _suspend(self, job: JobRecord, outcome: JobOutcome) -> None:
        """The job waits for an approval: store that and let it go (no slot held)."""
        if outcome.steps:
            await self.control.upsert_steps(job.id, outcome.steps)
        if not await self.control.suspend_job(job.id, self.id, outcome.waiting):
            log.warning("job_suspend_refused", job_id=job.id, worker_id=self.id)
            return
        log.info("job_suspended", job_id=job.id, steps=sorted(outcome.waiting))
        if self._on_suspended is not None:
            await self._on_suspended(job, sorted(outcome.waiting))  # its on_suspended hooks

    async def _hand_on(self, job: JobRecord, outcome: JobOutcome) -> None:
        """The job's next step needs tags this worker lacks: it goes back to the queue for
        a worker that has them, with its steps so far (that worker resumes after them)."""
        assert outcome.handoff is not None
        reason = outcome.error or "waiting for a worker with the next step's tags"
        await self.logs.write(LogLine(job.id, None, LogStream.SYSTEM, reason, _now()))
        await self.logs.flush()
        released = await self.control.release_job(
            job.id, self.id, outcome.handoff, reason, outcome.steps
        )
        log.info("job_handed_on", job_id=job.id, tags=sorted(outcome.handoff), released=released)

    async def _shutdown(self) -> None:
        self._stopping = True
        if not self._active:
            return
        for active in self._active.values():
            if active.consumer:
                active.interrupted = True
                active.cancel.set()
        tasks = [a.task for a in self._active.values() if a.task is not None]
        _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout)
        if pending:
            for active in list(self._active.values()):
                active.interrupted = True
                active.cancel.set()
            await asyncio.wait(pending, timeout=30)
        await self.logs.flush()

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                for job_id in await self.control.heartbeat(self.id):
                    self._cancel(job_id)
            except Exception:
                log.exception("heartbeat_failed", worker_id=self.id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.heartbeat_interval)

    async def _cancel_loop(self, stop: asyncio.Event) -> None:
        with self.control.subscribe(Channel.CANCEL) as sub:
            while not stop.is_set():
                for payload in await sub.wait(self.settings.safety_wakeup):
                    if payload == "*":
                        for job_id in await self.control.heartbeat(self.id):
                            self._cancel(job_id)
                    else:
                        for job_id in payload.split(","):
                            self._cancel(job_id)

    def _cancel(self, job_id: str) -> None:
        active = self._active.get(job_id)
        if active is not None and not active.cancel.is_set():
            log.info("job_cancel_requested", job_id=job_id)
            active.cancel.set()

    async def _recovery_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.recovery_interval)
            if not stop.is_set():
                await self._recover()

    async def _recover(self) -> None:
        try:
            recovered = await self.control.recover_stale_jobs(self.settings.stale_after)
        except Exception:
            log.exception("recovery_failed")
            return
        for r in recovered:
            log.warning(
                "job_recovered", job_id=r.id, task=r.task, requeued=r.requeued, reason=r.reason
            )

    async def _forget_dead_local_workers(self) -> None:
        """A worker row of this host whose process is gone: its jobs are recoverable now,
        not after ``stale_after``."""
        host = socket.gethostname()
        try:
            workers = await self.control.list_workers()
        except Exception:
            log.exception("list_workers_failed")
            return
        for w in workers:
            w_host, _, pid_text = w.name.rpartition(":")
            if w_host != host or not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if pid == os.getpid() or pid_alive(pid):
                continue
            log.info("dead_worker_forgotten", worker_id=w.id, pid=pid)
            await self.control.deregister_worker(w.id)


def _now() -> datetime:
    return datetime.now(UTC)
