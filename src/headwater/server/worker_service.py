"""The server side of the worker protocol, without HTTP (``server.routes_worker`` maps it
onto ``/worker/*``; tests call it directly).

A remote worker is stateless as far as the server is concerned: it sends its id and tags
with every claim, so any server can answer any worker, and a worker that fails over to
another server just carries on. What needs exclusive ownership is fenced:
- steps and finishes of a job are accepted only from the worker the store says runs it;
- an event-source consumer emits under a lease ``consumer:{trigger}`` whose owner is
  ``{worker}/{job}/{attempt}``: the first emit takes it (a fencing token comes back),
  every later one must carry the current token, so a consumer whose job was recovered
  and started elsewhere is refused (``StaleConsumerError``) and never feeds the trigger
  again. Heartbeats renew the lease; finishing the consumer job releases it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from headwater.dispatch.dispatcher import DispatchStatus, Event, tag_sets
from headwater.distributed.bundle import WorkspaceBundle, build_bundle, revision_of
from headwater.distributed.wire import ConsumerLease
from headwater.errors import (
    ConflictError,
    HeadwaterError,
    InputValidationError,
    NotFoundError,
    StaleConsumerError,
)
from headwater.node import Node
from headwater.store.base import (
    Channel,
    JobRecord,
    JobStatus,
    Lease,
    LogLine,
    StepUpdate,
    Store,
    Subscription,
    WorkerJobsReconciled,
)
from headwater.store.ids import parse_tags, tag_signature
from headwater.triggers.event_source import CONSUMER_SOURCE_TYPE, consumer_source_id
from headwater.workspace.models import EventSourceTrigger, Workspace
from headwater.workspace.secret_tree import secret_scope

__all__ = [
    "ConsumerLease",
    "EmitAnswer",
    "HeartbeatAnswer",
    "WorkerService",
    "WorkerServiceSettings",
    "consumer_lease_name",
]

log = structlog.get_logger(__name__)

MAX_WAIT_SECS = 30.0
_MAX_SEEN_SIGNATURES = 1000

# Stored: a new job, or held for the trigger's debounce/batch (its job comes later).
_TAKEN = (DispatchStatus.ACCEPTED, DispatchStatus.BUFFERED)


def consumer_lease_name(trigger: str) -> str:
    return f"consumer:{trigger}"


@dataclass(frozen=True, slots=True)
class WorkerServiceSettings:
    stale_after: float = 10.0  # consumer leases last this long without a heartbeat
    orphan_grace: float = 10.0  # a claimed job unknown to its worker this long is requeued


@dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    stop: tuple[str, ...]  # job ids the worker must stop (cancelled, lost)
    lost_leases: tuple[str, ...]  # consumer job ids whose lease is gone
    revision: str


@dataclass(frozen=True, slots=True)
class EmitAnswer:
    accepted: int
    duplicates: int
    rejected: int
    in_flight: int
    room: int | None  # more events the trigger takes before max_in_flight (None: no limit)
    token: int  # the consumer's fencing token, to send with the next emit


@dataclass(frozen=True, slots=True)
class _Shipped:
    workspace: Workspace
    bundle: WorkspaceBundle
    revision: str


class WorkerService:
    def __init__(self, node: Node, settings: WorkerServiceSettings | None = None) -> None:
        self._node = node
        self.settings = settings or WorkerServiceSettings()
        self._shipped: _Shipped | None = None
        self._seen_signatures: set[str] = set()
        self._signatures_of: Workspace | None = None  # the workspace _signatures are of
        self._signatures: set[str] = set()
        self._closing = asyncio.Event()
        self._kicks: dict[str, set[asyncio.Event]] = {}  # worker id -> its waiting claims

    def close(self) -> None:
        """The server stops: every long-poll answers now (with nothing)."""
        self._closing.set()

    async def _wait(
        self, subscription: Subscription, timeout: float, kick: asyncio.Event | None = None
    ) -> list[str]:
        """``subscription.wait(timeout)``, cut short when the server stops (or ``kick``)."""
        if self._closing.is_set() or (kick is not None and kick.is_set()):
            return []
        waiter = asyncio.ensure_future(subscription.wait(timeout))
        stoppers = [asyncio.ensure_future(self._closing.wait())]
        if kick is not None:
            stoppers.append(asyncio.ensure_future(kick.wait()))
        try:
            await asyncio.wait([waiter, *stoppers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for stopper in stoppers:
                stopper.cancel()
        if not waiter.done():
            waiter.cancel()
            return []
        return waiter.result()

    @property
    def store(self) -> Store:
        return self._node.store

    @property
    def node(self) -> Node:
        return self._node

    # -- workspace ---------------------------------------------------------------------
    def shipped(self) -> _Shipped:
        """The workspace as shipped to workers; rebuilt after a reload."""
        holder = self._node.holder
        current = self._shipped
        if current is None or current.workspace is not holder.workspace:
            bundle = build_bundle(holder.path, holder.workspace)
            current = _Shipped(holder.workspace, bundle, revision_of(bundle, holder.secrets))
            self._shipped = current
            log.info("workspace_bundle_built", revision=current.revision, bytes=len(bundle.archive))
        return current

    def workspace_document(self) -> dict[str, Any]:
        shipped = self.shipped()
        return {
            "revision": shipped.revision,
            "name": shipped.bundle.name,
            "entry": shipped.bundle.entry,
            "bundle_sha256": shipped.bundle.sha256,
            # Resolved here, sent only to authenticated workers, never stored by them.
            "secrets": dict(self._node.holder.secrets),
        }

    # -- workers -----------------------------------------------------------------------
    async def register(self, worker_id: str, name: str, tags: frozenset[str]) -> str:
        await self._node.store.register_worker(worker_id, name, tags)
        return self.shipped().revision

    async def deregister(self, worker_id: str) -> None:
        """A clean stop: its consumers' leases are freed at once, so their jobs (recovered
        by the next sweep) start elsewhere without waiting for the leases to expire."""
        store = self._node.store
        await store.deregister_worker(worker_id)
        for lease in await store.list_leases("consumer:"):
            if lease.owner.startswith(f"{worker_id}/"):
                await store.release_lease(lease.name, lease.owner, lease.token)

    async def heartbeat(
        self, worker_id: str, active: Sequence[str], leases: Sequence[ConsumerLease]
    ) -> HeartbeatAnswer:
        store = self._node.store
        cancel = await store.heartbeat(worker_id)
        seen: WorkerJobsReconciled = await store.reconcile_worker_jobs(
            worker_id, active, self.settings.orphan_grace
        )
        for job_id in seen.requeued:
            log.warning("orphan_job_requeued", job_id=job_id, worker_id=worker_id)
        lost_leases: list[str] = []
        for lease in leases:
            owner = _consumer_owner(worker_id, lease.job_id, lease.attempt)
            name = consumer_lease_name(lease.trigger)
            if not await store.renew_lease(name, owner, lease.token, self.settings.stale_after):
                log.warning("consumer_lease_lost", trigger=lease.trigger, job_id=lease.job_id)
                lost_leases.append(lease.job_id)
        stop = tuple(dict.fromkeys([*cancel, *seen.lost, *lost_leases]))
        return HeartbeatAnswer(stop, tuple(lost_leases), self.shipped().revision)

    # -- claiming ----------------------------------------------------------------------
    def eligible_signatures(self, tags: frozenset[str]) -> list[str]:
        """Tag signatures of jobs a worker with ``tags`` can run: those of the workspace's
        tasks and steps and those seen in wake-ups, whose every tag the worker has."""
        ws = self._node.holder.workspace
        if ws is not self._signatures_of:
            self._signatures_of = ws
            self._signatures = {tag_signature(tags) for tags in tag_sets(ws)}
        known = self._signatures | self._seen_signatures
        known.add("")
        return sorted(s for s in known if parse_tags(s) <= tags)

    def _note(self, payloads: Sequence[str]) -> None:
        for p in payloads:
            if p != "*" and len(self._seen_signatures) < _MAX_SEEN_SIGNATURES:
                self._seen_signatures.add(p)

    async def claim(
        self,
        worker_id: str,
        tags: frozenset[str],
        limit: int,
        wait: float,
        gone: Callable[[], Awaitable[bool]] = lambda: _false(),
    ) -> list[JobRecord]:
        """Claim now, or wait (up to ``wait`` s) for a job this worker can run: woken by
        ``Channel.JOBS`` (LISTEN/NOTIFY on PostgreSQL), never by a polling timer."""
        store = self._node.store
        deadline = time.monotonic() + max(0.0, min(wait, MAX_WAIT_SECS))
        kick = asyncio.Event()
        self._kicks.setdefault(worker_id, set()).add(kick)
        try:
            with store.subscribe(Channel.JOBS) as wakeups:  # before the claim: no lost wake-up
                while True:
                    jobs = await store.claim_jobs(worker_id, self.eligible_signatures(tags), limit)
                    if jobs:
                        self._node.job_metrics.claimed(jobs)
                        return jobs
                    while True:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or self._closing.is_set() or kick.is_set():
                            return []
                        payloads = await self._wait(wakeups, remaining, kick)
                        self._note(payloads)
                        if any(p == "*" or parse_tags(p) <= tags for p in payloads):
                            break
                    if await gone():
                        return []  # nobody would receive what we claim
        finally:
            waiting = self._kicks.get(worker_id)
            if waiting is not None:
                waiting.discard(kick)
                if not waiting:
                    del self._kicks[worker_id]

    # -- job records -------------------------------------------------------------------
    async def _owned(self, worker_id: str, job_ids: Sequence[str]) -> set[str]:
        jobs = await self._node.store.get_jobs(job_ids)
        return {j.id for j in jobs if j.status is JobStatus.RUNNING and j.worker_id == worker_id}

    async def upsert_steps(
        self, worker_id: str, updates: Sequence[tuple[str, StepUpdate]]
    ) -> list[str]:
        """Write the steps of jobs this worker runs; returns the job ids refused."""
        owned = await self._owned(worker_id, list({job_id for job_id, _ in updates}))
        by_job: dict[str, list[StepUpdate]] = {}
        refused: list[str] = []
        for job_id, update in updates:
            if job_id in owned:
                by_job.setdefault(job_id, []).append(update)
            elif job_id not in refused:
                refused.append(job_id)
        await asyncio.gather(*(self._node.store.upsert_steps(j, s) for j, s in by_job.items()))
        return refused

    async def append_logs(self, lines: Sequence[LogLine]) -> None:
        redact = self._node.holder.redactor.redact_text
        safe = []
        for line in lines:  # a worker redacts too; this covers one with stale secrets
            text = redact(line.line)
            safe.append(
                line
                if text is line.line
                else LogLine(line.job_id, line.step, line.stream, text, line.ts)
            )
        await self._node.store.append_logs(safe)

    async def finish(
        self,
        worker_id: str,
        results: Sequence[tuple[str, JobStatus, Any, str | None]],
        leases: Sequence[ConsumerLease] = (),
        claim: tuple[int, frozenset[str]] | None = None,
    ) -> tuple[list[bool], list[JobRecord]]:
        """Record results; with ``claim`` (limit, tags) also claim that many next jobs at
        once (the slots the finished jobs free), saving the worker a round trip per job.
        A claim of this worker waiting on this server answers at once, so that the
        worker's loop takes the jobs claimed here."""
        store = self._node.store
        changed = await store.finish_jobs([(j, worker_id, s, o, e) for j, s, o, e in results])
        finished = [r[0] for r, ok in zip(results, changed, strict=True) if ok]
        await self._observe_finished(finished)
        await self._fire_hooks(finished)
        for lease in leases:  # the consumer ended: its trigger's next consumer may start
            owner = _consumer_owner(worker_id, lease.job_id, lease.attempt)
            await store.release_lease(consumer_lease_name(lease.trigger), owner, lease.token)
        jobs: list[JobRecord] = []
        if claim is not None and claim[0] > 0 and not self._closing.is_set():
            jobs = await store.claim_jobs(worker_id, self.eligible_signatures(claim[1]), claim[0])
            self._node.job_metrics.claimed(jobs)
            if jobs:
                for kick in self._kicks.get(worker_id, ()):
                    kick.set()
        return changed, jobs

    async def suspend(
        self, worker_id: str, waits: Mapping[str, Mapping[str, datetime | None]]
    ) -> dict[str, bool]:
        """Jobs of this worker that wait for approvals: let them go, fire on_suspended."""
        done: dict[str, bool] = {}
        for job_id, waiting in waits.items():
            done[job_id] = await self._node.store.suspend_job(job_id, worker_id, waiting)
            if done[job_id]:
                try:
                    await self._node.hooks.fire_suspended(job_id, sorted(waiting))
                except HeadwaterError:  # best effort, as for on_success/on_error
                    log.exception("hooks_failed", job_id=job_id)
        return done

    async def _observe_finished(self, job_ids: Sequence[str]) -> None:
        """Duration and final status of the jobs a worker just finished: read back (one
        query) for their stored start and finish times."""
        if not job_ids:
            return
        try:
            jobs = await self._node.store.get_jobs(job_ids)
        except Exception:  # best effort: the finish stands
            log.exception("finish_metrics_failed")
            self._node.job_metrics.store_error("get_jobs")
            return
        for job in jobs:
            self._node.job_metrics.finished(job, job.status.value)

    async def _fire_hooks(self, job_ids: Sequence[str]) -> None:
        hooks = self._node.hooks
        if not job_ids or not hooks.has_hooks():
            return
        for job_id in job_ids:
            try:
                job = await self._node.store.get_job(job_id)  # with its steps
                if job is not None:
                    await hooks.finished(job)  # the task's retry, or the job's hooks
            except HeadwaterError:  # best effort: the job's own finish stands
                log.exception("hooks_failed", job_id=job_id)

    async def wait_finished(self, job_ids: Sequence[str], timeout: float) -> list[JobRecord]:
        """The jobs, once one of them is final or after ``timeout`` s."""
        store = self._node.store
        deadline = time.monotonic() + max(0.0, min(timeout, MAX_WAIT_SECS))
        wanted = set(job_ids)
        with store.subscribe(Channel.FINISHED) as finished:
            while True:
                jobs = await store.get_jobs(job_ids)
                remaining = deadline - time.monotonic()
                if any(j.status.is_terminal for j in jobs) or len(jobs) < len(wanted):
                    return jobs
                while remaining > 0 and not self._closing.is_set():
                    payloads = await self._wait(finished, remaining)
                    if any(p == "*" or wanted & set(p.split(",")) for p in payloads):
                        break
                    remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing.is_set():
                    return await store.get_jobs(job_ids)

    async def submit_child(
        self, worker_id: str, parent_id: str, step: str, task: str, payload: Mapping[str, Any]
    ) -> str:
        if not await self._owned(worker_id, [parent_id]):
            raise ConflictError(f"job {parent_id} is not running on worker {worker_id}")
        (outcome,) = await self._node.dispatcher.dispatch(
            [
                Event(
                    task,
                    payload,
                    "task",
                    source_id=parent_id,
                    dedup_key=f"task:{parent_id}:{step}",
                    parent_job_id=parent_id,
                )
            ]
        )
        if outcome.status is DispatchStatus.REJECTED:
            raise InputValidationError(task, [outcome.reason or "rejected"])
        assert outcome.job_id is not None
        return outcome.job_id

    # -- event sources -----------------------------------------------------------------
    def _trigger(self, trigger_key: str) -> EventSourceTrigger:
        ws = self._node.holder.workspace
        name = trigger_key.removeprefix(f"{ws.name}/")
        trigger = ws.triggers.get(name)
        if not isinstance(trigger, EventSourceTrigger):
            raise NotFoundError(f"no event_source trigger {trigger_key!r} in this workspace")
        return trigger

    async def _fence(
        self, worker_id: str, trigger_key: str, job_id: str, attempt: int, token: int | None
    ) -> int:
        """The consumer's fencing token, or StaleConsumerError / ConflictError."""
        store = self._node.store
        jobs = await store.get_jobs([job_id])
        job = jobs[0] if jobs else None
        if (
            job is None
            or job.status is not JobStatus.RUNNING
            or job.worker_id != worker_id
            or job.attempt != attempt
            or job.source_type != CONSUMER_SOURCE_TYPE
            or job.source_id != consumer_source_id(trigger_key)
        ):
            raise StaleConsumerError(
                f"consumer job {job_id} (attempt {attempt}) no longer runs on worker "
                f"{worker_id} for trigger {trigger_key!r}"
            )
        name = consumer_lease_name(trigger_key)
        owner = _consumer_owner(worker_id, job_id, attempt)
        if token is None:
            lease = await store.acquire_lease(name, owner, self.settings.stale_after)
            if lease is None:
                held = await _lease(store.list_leases(name), name)
                until = held.expires_at.isoformat() if held else "soon"
                # Not stale: the previous consumer's lease has not expired yet. Retry.
                raise ConflictError(
                    f"trigger {trigger_key!r} is still leased to another consumer until {until}"
                )
            return lease.token
        held = await _lease(store.list_leases(name), name)
        if held is None or held.owner != owner or held.token != token:
            raise StaleConsumerError(
                f"fencing token {token} of trigger {trigger_key!r} is stale"
                + (f" (current: {held.token})" if held else "")
            )
        return token

    async def emit(
        self,
        worker_id: str,
        trigger_key: str,
        job_id: str,
        attempt: int,
        token: int | None,
        events: Sequence[tuple[str, Mapping[str, Any]]],
        rejected: Mapping[int, str] | None = None,
        cursor: str | None = None,
    ) -> EmitAnswer:
        """A batch of a consumer's events (idempotency key, payload) → target jobs;
        ``rejected`` (index → reason): events the worker refused, stored as rejected."""
        refused = rejected or {}
        trigger = self._trigger(trigger_key)
        token = await self._fence(worker_id, trigger_key, job_id, attempt, token)
        node = self._node
        secrets = node.holder.secrets
        defaults = node.templates.render(
            trigger.input,
            secret_scope(secrets),
            where=f"trigger {trigger_key!r} input",
        )
        outcomes = await node.dispatcher.dispatch(
            [
                Event(
                    trigger.target_task,
                    payload,
                    "event_source",
                    source_id=trigger_key,
                    dedup_key=key,
                    defaults=defaults if isinstance(defaults, Mapping) else {},
                    rejected=refused.get(i),
                )
                for i, (key, payload) in enumerate(events)
            ],
            (trigger_key, cursor) if cursor is not None else None,
        )
        in_flight = await node.store.count_in_flight(trigger_key)
        room = None if trigger.max_in_flight is None else max(0, trigger.max_in_flight - in_flight)
        return EmitAnswer(
            accepted=sum(o.status in _TAKEN for o in outcomes),
            duplicates=sum(o.status is DispatchStatus.DUPLICATE for o in outcomes),
            rejected=sum(o.status is DispatchStatus.REJECTED for o in outcomes),
            in_flight=in_flight,
            room=room,
            token=token,
        )

    async def read_cursor(self, trigger_key: str) -> str | None:
        self._trigger(trigger_key)  # an event-source trigger of the workspace, or 404
        return await self._node.read_cursor(trigger_key)

    async def wait_room(self, trigger_key: str, below: int, timeout: float) -> int:
        """The trigger's in-flight count, once it is below ``below`` or after ``timeout``."""
        store = self._node.store
        deadline = time.monotonic() + max(0.0, min(timeout, MAX_WAIT_SECS))
        with store.subscribe(Channel.FINISHED) as finished:
            while True:
                count = await store.count_in_flight(trigger_key)
                remaining = deadline - time.monotonic()
                if count < below or remaining <= 0 or self._closing.is_set():
                    return count
                await self._wait(finished, remaining)


def _consumer_owner(worker_id: str, job_id: str, attempt: int) -> str:
    return f"{worker_id}/{job_id}/{attempt}"


async def _lease(leases: Awaitable[list[Lease]], name: str) -> Lease | None:
    return next((le for le in await leases if le.name == name), None)


async def _false() -> bool:
    return False
