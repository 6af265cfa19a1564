"""One path for every event: merge defaults, validate, insert in batches, then acknowledge.

A cron tick, a webhook POST, an ``OUTPUT:`` line, a broker message and an API call all
become an ``Event`` handed to ``Dispatcher.dispatch``. The returned outcomes are only
produced after the insert committed, so a source may acknowledge exactly then: at-least-
once delivery plus the unique dedup key makes each event exactly one job.

``BatchingDispatcher`` coalesces concurrent single-event callers into one insert per
batch (one round trip for up to ``max_batch`` events).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from headwater import jsonsafe
from headwater.core.workflows import WorkflowStart
from headwater.dispatch.flow import FlowPlan, trigger_priorities
from headwater.dispatch.gather import Gathered, Gatherer
from headwater.errors import InputValidationError, JsonValueError, NotFoundError, first_line
from headwater.store.base import (
    NO_FLOW,
    InsertOutcome,
    JobFlow,
    NewJob,
    RejectedEvent,
    StepUpdate,
    Store,
)
from headwater.store.group_commit import GroupCommit
from headwater.telemetry.tracing import Tracing
from headwater.workspace.hooks import find_task
from headwater.workspace.inputs import InputChecker, compile_input_schema
from headwater.workspace.models import Step, Task, Workspace
from headwater.workspace.multi import resolve_task_name, task_workspace
from headwater.workspace.templating import TemplateEngine

__all__ = [
    "BatchingDispatcher",
    "DispatchOutcome",
    "DispatchStatus",
    "Dispatcher",
    "Event",
    "PreparedBatch",
    "tag_sets",
    "task_tags",
    "workflow_event",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """Something that should become one job of ``target_task``."""

    target_task: str
    payload: Mapping[str, Any]
    source_type: str
    source_id: str | None = None
    dedup_key: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)  # rendered trigger input
    parent_job_id: str | None = None
    tags: frozenset[str] | None = None  # worker tags; None: what the task's steps need
    max_attempts: int | None = None  # claims before recovery fails it; None: the default
    # Refused by its source already (e.g. valid JSON that no store can keep; the payload
    # is then cleaned): stored as a rejected event with this reason, never a job.
    rejected: str | None = None
    # Claimed before jobs of a lower priority; None: the task's or trigger's (flow).
    priority: int | None = None


class DispatchStatus(StrEnum):
    ACCEPTED = "accepted"  # a new job was created
    DUPLICATE = "duplicate"  # the dedup key already had a job; ``job_id`` is that job
    # Held for a debounce/batch (dispatch.gather); its job comes later. A DUPLICATE of a
    # held event has no ``job_id`` until its buffer is flushed.
    BUFFERED = "buffered"
    REJECTED = "rejected"  # stored as a rejected event with ``reason``


_ACCEPTED, _DUPLICATE = DispatchStatus.ACCEPTED, DispatchStatus.DUPLICATE


@dataclass(frozen=True, slots=True)
class DispatchOutcome:
    status: DispatchStatus
    job_id: str | None = None
    reason: str | None = None


def workflow_event(start: WorkflowStart) -> Event:
    """The event of a workflow run (``headwater.start_workflow``): the workflow id is the
    job's dedup key, so a second start with that id finds the first run's job."""
    return Event(
        start.task,
        start.input,
        "workflow",
        source_id=start.parent_job_id,
        dedup_key=start.workflow_id,
        parent_job_id=start.parent_job_id,
        max_attempts=start.max_attempts,
    )


def task_tags(workspace: Workspace, task: Task) -> frozenset[str]:
    """The worker tags a new job of ``task`` carries: those its first steps (the ones
    without ``depends_on``) need. A worker that lacks a later step's tags hands the job
    on when it gets there (``headwater.engine.executor``), so a job whose steps need
    different workers runs across them."""
    tags: set[str] = set()
    for step in task.flow.values():
        if step.depends_on or not _resolvable(workspace, step):
            continue
        tags |= workspace.step_tags(step)
    return frozenset(tags)


def tag_sets(workspace: Workspace) -> set[frozenset[str]]:
    """Every tag set a job of ``workspace`` can carry: a task's first steps', or one
    step's (a job handed on to a worker with that step's tags)."""
    sets: set[frozenset[str]] = set()
    for task in workspace.tasks.values():
        sets.add(task_tags(workspace, task))
        for step in task.flow.values():
            if _resolvable(workspace, step):
                sets.add(workspace.step_tags(step))
    return sets


def _resolvable(workspace: Workspace, step: Step) -> bool:
    return step.inline is not None or (step.action is not None and step.action in workspace.actions)


@dataclass(frozen=True, slots=True)
class _Target:
    """A task as the dispatcher needs it, worked out once per workspace load."""

    check_input: InputChecker
    tags: frozenset[str]
    workspace: str  # the workspace the task belongs to (several: headwater.workspace.multi)
    task: str  # its name in the (combined) workspace
    flow: FlowPlan | None = None  # its concurrency, rate limit, priority (most have none)


class Dispatcher:
    """Turns events into jobs of the current workspace."""

    def __init__(
        self,
        store: Store,
        workspace: Callable[[], Workspace],
        max_attempts: int = 3,
        *,
        observe: Callable[[str, str | None, str, int], None] | None = None,
        tracing: Tracing | None = None,
        templates: TemplateEngine | None = None,
    ) -> None:
        self._tracing = tracing
        self._store = store
        # Told (source_type, source_id, outcome, count) of the events stored: the metrics.
        self._observe = observe
        self._workspace = workspace
        self._max_attempts = max_attempts
        # Per task of the current workspace: its input checker and the tags its steps
        # need, worked out once (an event source sends tens of thousands a second).
        self._tasks_of: Workspace | None = None
        self._tasks: dict[str, _Target] = {}
        # Events of triggers with debounce/batch are buffered instead (dispatch.gather).
        self.gatherer = Gatherer(store)
        self._priorities: dict[str, int | str] = {}  # trigger source id → its priority
        self._templates = templates or TemplateEngine()
        # Concurrent submits (workflow starts, API calls) share one insert and commit.
        self._submits: GroupCommit[NewJob, InsertOutcome] = GroupCommit(
            lambda jobs: self._store.insert_jobs(jobs)
        )

    def prepare(self, event: Event) -> NewJob:
        """Merge and validate one event; raises NotFoundError / InputValidationError."""
        return self._prepare(self._workspace(), event)

    def _task(self, ws: Workspace, name: str) -> _Target:
        if ws is not self._tasks_of:  # reloaded: a new workspace object
            self._tasks_of, self._tasks = ws, {}
            self._priorities = trigger_priorities(ws)
        found = self._tasks.get(name)
        if found is None:
            canonical = resolve_task_name(ws, name)
            task = find_task(ws, canonical)
            if task is None:
                raise NotFoundError(f"task {name!r} is not defined in workspace {ws.name!r}")
            found = self._tasks[name] = _Target(
                compile_input_schema(task.input),
                task_tags(ws, task),
                task_workspace(ws, canonical),
                canonical,
                FlowPlan.of(ws.name, canonical, task),
            )
        return found

    def _prepare(self, ws: Workspace, event: Event) -> NewJob:
        target = self._task(ws, event.target_task)
        check_input, tags = target.check_input, target.tags
        # Event fields win over the trigger's defaults (top-level keys), as the seed says.
        # (The checker copies what it is given: the caller's payload is never changed.)
        payload = {**event.defaults, **event.payload} if event.defaults else event.payload
        job_input = check_input(event.target_task, payload)
        priority, flow = self._flow(target, job_input, event.source_id)
        if event.priority is not None:
            priority = event.priority
        return NewJob(
            workspace=target.workspace,
            task=target.task,
            input=job_input,
            source_type=event.source_type,
            source_id=event.source_id,
            dedup_key=event.dedup_key,
            tags=event.tags if event.tags is not None else tags,
            parent_job_id=event.parent_job_id,
            max_attempts=event.max_attempts or self._max_attempts,
            priority=priority,
            flow=flow,
        )

    def _flow(
        self, target: _Target, job_input: Mapping[str, Any], source_id: str | None
    ) -> tuple[int, JobFlow]:
        trigger = self._priorities.get(source_id) if source_id is not None else None
        if target.flow is None:
            if trigger is None:
                return 0, NO_FLOW
            plan = FlowPlan(f"{target.workspace}/{target.task}", None, None, None)
            return plan.render(self._templates, target.task, job_input, trigger)
        return target.flow.render(self._templates, target.task, job_input, trigger)

    async def submit(self, event: Event, *, counted: bool = True) -> InsertOutcome:
        """One event that must become a job or fail its caller: an API call, ``headwater
        run``, a dead-letter replay. An invalid one raises (NotFoundError /
        InputValidationError) and nothing is stored. ``counted``: traced and counted in
        the metrics as a dispatched event (``run`` and replays are not, as before)."""
        job = self.prepare(event)
        started = time.time_ns()
        (outcome,) = await self._submits.submit([job])
        if counted:
            if outcome.created and self._tracing is not None:
                self._tracing.dispatch(
                    outcome.id, job.task, job.source_type, job.source_id, started
                )
            if self._observe is not None:
                status = DispatchStatus.ACCEPTED if outcome.created else DispatchStatus.DUPLICATE
                self._observe(job.source_type, job.source_id, status.value, 1)
        return outcome

    async def submit_with_steps(self, event: Event, steps: Sequence[StepUpdate]) -> str:
        """``submit`` for a re-run from a step (``dispatch.rerun``): the job is stored
        with ``steps`` already ended, in one transaction. Raises as ``submit`` does."""
        return await self._store.insert_job_with_steps(self.prepare(event), steps)

    async def reject(self, events: Sequence[RejectedEvent]) -> None:
        """Store events their source refused before dispatch (a dead-lettered broker
        message, a cron tick whose input does not render or that was skipped): kept,
        with why, once per dedup key."""
        if events:
            await self._store.insert_rejected(events)

    async def dispatch(
        self, events: Sequence[Event], cursor: tuple[str, str] | None = None
    ) -> list[DispatchOutcome]:
        """Insert every valid event in one transaction; store the others as rejected.
        ``cursor`` (trigger key, value): the event source's cursor after these events,
        stored with the jobs (see ``commit``)."""
        return await self.commit(self.prepare_batch(events), cursor)

    def prepare_batch(self, events: Sequence[Event]) -> PreparedBatch:
        """The CPU half of ``dispatch``: merge and validate every event (no I/O)."""
        batch = PreparedBatch([None] * len(events))
        ws = self._workspace()
        for i, event in enumerate(events):
            try:
                if event.rejected is not None:
                    raise JsonValueError(event.rejected, unstorable=True)
                batch.jobs.append(self._prepare(ws, event))
                batch.job_slots.append(i)
                batch.payloads.append(event.payload)
            except (InputValidationError, NotFoundError, JsonValueError) as exc:
                reason = str(exc)
                batch.rejected.append(
                    RejectedEvent(
                        id=None,
                        source_type=event.source_type,
                        source_id=event.source_id,
                        target_task=event.target_task,
                        payload=dict(event.payload),
                        reason=reason,
                        dedup_key=event.dedup_key,
                    )
                )
                batch.outcomes[i] = DispatchOutcome(DispatchStatus.REJECTED, reason=reason)
        return batch

    def prepare_keyed(
        self,
        target_task: str,
        source_type: str,
        source_id: str,
        defaults: Mapping[str, Any],
        events: Sequence[tuple[str, Mapping[str, Any]]],
        rejected: Mapping[int, str] | None = None,
    ) -> PreparedBatch:
        """``prepare_batch`` for one source's events, given as (dedup key, payload): an
        event source's batch, without an ``Event`` per payload. ``rejected``: events the
        source refused already (index → reason)."""
        ws = self._workspace()
        refused = rejected or {}
        try:
            target = self._task(ws, target_task)
        except NotFoundError:  # every event is rejected: the general path says why
            return self.prepare_batch(
                [Event(target_task, p, source_type, source_id, key, defaults) for key, p in events]
            )
        check_input, tags, task_ws = target.check_input, target.tags, target.workspace
        target_task = target.task
        batch = PreparedBatch([None] * len(events))
        jobs, slots, max_attempts = batch.jobs, batch.job_slots, self._max_attempts
        payloads = batch.payloads
        # Without flow settings every job of the batch has the same (0, NO_FLOW).
        fixed = target.flow is None and self._priorities.get(source_id) is None
        priority, flow = 0, NO_FLOW
        for i, (key, payload) in enumerate(events):
            merged = {**defaults, **payload} if defaults else payload
            try:
                if refused and i in refused:
                    raise InputValidationError(target_task, [refused[i]])
                job_input = check_input(target_task, merged)
                if not fixed:
                    priority, flow = self._flow(target, job_input, source_id)
            except InputValidationError:  # the general path records why
                event = Event(
                    target_task,
                    payload,
                    source_type,
                    source_id,
                    key,
                    defaults,
                    rejected=refused.get(i),
                )
                one = self.prepare_batch([event])
                batch.outcomes[i] = one.outcomes[0]
                batch.rejected.extend(one.rejected)
                continue
            # Positional (workspace, task, input, source_type, source_id, dedup_key, tags,
            # parent_job_id, max_attempts, id, priority, flow): a fifth faster.
            jobs.append(
                NewJob(
                    task_ws, target_task, job_input, source_type, source_id, key, tags,
                    None, max_attempts, None, priority, flow,
                )
            )  # fmt: skip
            slots.append(i)
            payloads.append(payload)
        return batch

    async def commit(
        self, batch: PreparedBatch, cursor: tuple[str, str] | None = None
    ) -> list[DispatchOutcome]:
        """The I/O half of ``dispatch``: store the jobs (one transaction) and the rejects.

        ``cursor`` commits in the jobs' transaction, after the rejects are stored: once it
        is stored, every event up to it is a job or a rejected event. (A crash between the
        two leaves the cursor behind: the events are replayed and their dedup keys keep
        them single.)"""
        outcomes = batch.outcomes
        started = time.time_ns()
        gathered = self.gatherer.take(self._workspace(), batch.jobs) if batch.jobs else None
        if gathered is not None:
            self._refuse(batch, gathered.refused)
        if batch.rejected:
            await self._store.insert_rejected(batch.rejected)
            for r in batch.rejected:
                log.warning(
                    "event_rejected", source_id=r.source_id, task=r.target_task, reason=r.reason
                )
        if gathered is not None:
            cursor = await self._gather(batch, gathered, cursor)
        if batch.jobs:
            try:
                results: Sequence[InsertOutcome | str] = await self._store.insert_jobs(
                    batch.jobs, cursor
                )
            except Exception as exc:
                if not jsonsafe.is_data_error(exc):
                    raise  # the store failed: every event of the batch learns it
                results = await self._isolate(batch)
                if cursor is not None:  # every event up to it is now a job or rejected
                    await self._store.save_cursor(*cursor)
            for slot, result in zip(batch.job_slots, results, strict=True):
                if isinstance(result, str):
                    outcomes[slot] = DispatchOutcome(DispatchStatus.REJECTED, reason=result)
                    continue
                status = _ACCEPTED if result.created else _DUPLICATE
                outcomes[slot] = DispatchOutcome(status, result.id)
        elif cursor is not None:
            await self._store.save_cursor(*cursor)
        self._count(batch)
        if self._tracing is not None:
            self._trace(batch, started)
        return [o for o in outcomes if o is not None]

    def _refuse(self, batch: PreparedBatch, refused: Sequence[tuple[int, str]]) -> None:
        """Jobs of ``batch`` (by index) that become rejected events with a reason."""
        for index, reason in refused:
            job = batch.jobs[index]
            batch.rejected.append(
                RejectedEvent(
                    id=None,
                    source_type=job.source_type,
                    source_id=job.source_id,
                    target_task=job.task,
                    payload=jsonsafe.clean(dict(batch.payloads[index])),
                    reason=reason,
                    dedup_key=job.dedup_key,
                )
            )
            batch.outcomes[batch.job_slots[index]] = DispatchOutcome(
                DispatchStatus.REJECTED, reason=reason
            )

    async def _gather(
        self, batch: PreparedBatch, gathered: Gathered, cursor: tuple[str, str] | None
    ) -> tuple[str, str] | None:
        """Buffer the jobs of debounce/batch triggers and take them out of ``batch``;
        returns the cursor still to store (with the other jobs)."""
        refused = {slot for slot, _ in gathered.refused}
        rest = await self.gatherer.store(gathered, cursor if gathered.all_jobs else None)
        late = [(i, o) for i, o in gathered.refused if i not in refused]  # unstorable
        if late:
            rejected_before = len(batch.rejected)
            self._refuse(batch, late)
            await self._store.insert_rejected(batch.rejected[rejected_before:])
        buffered = 0
        for index, outcome in zip(gathered.slots, gathered.outcomes, strict=True):
            if isinstance(outcome, str):
                continue
            status = DispatchStatus.BUFFERED if outcome.buffered else DispatchStatus.DUPLICATE
            buffered += outcome.buffered
            batch.outcomes[batch.job_slots[index]] = DispatchOutcome(status, outcome.job_id)
        if buffered and self._observe is not None:
            job = batch.jobs[gathered.slots[0]]
            self._observe(job.source_type, job.source_id, DispatchStatus.BUFFERED.value, buffered)
        taken = set(gathered.slots)
        keep = [i for i in range(len(batch.jobs)) if i not in taken]
        batch.jobs = [batch.jobs[i] for i in keep]
        batch.job_slots = [batch.job_slots[i] for i in keep]
        batch.payloads = [batch.payloads[i] for i in keep]
        if gathered.all_jobs:
            return rest  # None, unless an unstorable event made it wait for the rejects
        return cursor

    def _trace(self, batch: PreparedBatch, started: int) -> None:
        tracing = self._tracing
        if tracing is None:
            return
        for job, slot in zip(batch.jobs, batch.job_slots, strict=True):
            outcome = batch.outcomes[slot]
            if outcome is not None and outcome.status is DispatchStatus.ACCEPTED and outcome.job_id:
                tracing.dispatch(outcome.job_id, job.task, job.source_type, job.source_id, started)

    def _count(self, batch: PreparedBatch) -> None:
        observe = self._observe
        if observe is None:
            return
        # Counted per label set: a batch usually comes from one trigger (one series).
        # Keyed by the status member itself (a str: its value's hash and equality), whose
        # ``.value`` is a Python-level property: read once per series, not per event.
        counts: collections.Counter[tuple[str, str | None, str]] = collections.Counter(
            (r.source_type, r.source_id, DispatchStatus.REJECTED) for r in batch.rejected
        )
        outcomes = batch.outcomes
        for job, slot in zip(batch.jobs, batch.job_slots, strict=True):
            outcome = outcomes[slot]
            if outcome is not None:
                counts[(job.source_type, job.source_id, outcome.status)] += 1
        for (source_type, source_id, status), n in counts.items():
            observe(source_type, source_id, str(status), n)

    async def _isolate(self, batch: PreparedBatch) -> list[InsertOutcome | str]:
        """The jobs of a batch that the store refused for its data, written again in
        halves until each bad one is alone: those become rejected events (their reason
        instead of an outcome), the others are inserted, so one bad row never fails its
        batch-mates. A failure that is not about the data stops and is raised."""
        results: list[InsertOutcome | str] = []
        size = len(batch.jobs)
        pending = [(size // 2, size), (0, size // 2)]  # [start, end); the whole one failed
        while pending:
            start, end = pending.pop()  # in order: the first half is written first
            if start == end:
                continue
            try:
                results += await self._store.insert_jobs(batch.jobs[start:end])
            except Exception as exc:
                if not jsonsafe.is_data_error(exc):
                    raise
                if end - start > 1:
                    mid = (start + end) // 2
                    pending += [(mid, end), (start, mid)]
                    continue
                job, payload = batch.jobs[start], batch.payloads[start]
                results.append(await self._reject_unstorable(job, payload, exc))
        return results

    async def _reject_unstorable(
        self, job: NewJob, payload: Mapping[str, Any], exc: Exception
    ) -> str:
        reason = f"the store cannot keep this event: {first_line(exc)}"
        await self._store.insert_rejected(
            [
                RejectedEvent(
                    id=None,
                    source_type=job.source_type,
                    source_id=job.source_id,
                    target_task=job.task,
                    payload=jsonsafe.clean(dict(payload)),
                    reason=reason,
                    dedup_key=job.dedup_key,
                )
            ]
        )
        log.warning("event_rejected", source_id=job.source_id, task=job.task, reason=reason)
        return reason


@dataclass(slots=True)
class PreparedBatch:
    """Events merged and validated, not stored yet (``Dispatcher.prepare_batch``)."""

    outcomes: list[DispatchOutcome | None]  # per event; set for the rejected ones
    jobs: list[NewJob] = field(default_factory=list)
    job_slots: list[int] = field(default_factory=list)  # per job: its event's index
    payloads: list[Mapping[str, Any]] = field(default_factory=list)  # per job: as sent
    rejected: list[RejectedEvent] = field(default_factory=list)


class BatchingDispatcher:
    """Coalesces concurrent ``dispatch_one`` calls into batched ``Dispatcher.dispatch``.

    Callers wait for their own outcome, which exists only after the batch committed.
    The queue is bounded, so producers faster than the store are slowed, never buffered
    without bound."""

    def __init__(self, dispatcher: Dispatcher, max_batch: int = 500, max_queue: int = 10_000):
        self._dispatcher = dispatcher
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Event, asyncio.Future[DispatchOutcome]]] = asyncio.Queue(
            max_queue
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher

    async def dispatch_one(self, event: Event) -> DispatchOutcome:
        self._ensure_started()
        future: asyncio.Future[DispatchOutcome] = asyncio.get_running_loop().create_future()
        await self._queue.put((event, future))
        return await future

    async def dispatch_many(self, events: Sequence[Event]) -> list[DispatchOutcome]:
        """A caller that already has a batch skips the queue."""
        return await self._dispatcher.dispatch(events)

    async def reject(self, events: Sequence[RejectedEvent]) -> None:
        await self._dispatcher.reject(events)

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="headwater-dispatcher")

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            events = [e for e, _ in batch]
            try:
                outcomes = await self._dispatcher.dispatch(events)
            except Exception as exc:  # the store failed: every caller of the batch learns it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), outcome in zip(batch, outcomes, strict=True):
                if not fut.done():
                    fut.set_result(outcome)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
