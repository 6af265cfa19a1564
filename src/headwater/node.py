"""One headwater process: store, workspace, dispatcher, worker and (optionally) the API.

``headwater up`` runs a Node with everything in one process on a SQLite file; ``headwater
run`` runs a Node without HTTP for one job. The Node is also the ``Runtime`` the HTTP app
is given (workspace, submit, redact, health).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from headwater.artifacts import ArtifactStore
from headwater.core.workflows import WorkflowStart
from headwater.dispatch.dispatcher import (
    BatchingDispatcher,
    Dispatcher,
    DispatchStatus,
    Event,
    tag_sets,
    workflow_event,
)
from headwater.dispatch.gather import Flusher
from headwater.dispatch.hooks import HookFirer
from headwater.dispatch.rerun import rerun_from
from headwater.engine.executor import JobExecutor
from headwater.engine.functions import FunctionCache
from headwater.engine.logwriter import LogWriter
from headwater.engine.steps import LineHook, StepRunner
from headwater.engine.workflow_timers import run_workflow_timers
from headwater.errors import HeadwaterError, InputValidationError, NotFoundError
from headwater.runners import RUNNER_TAGS, close_runners, open_runners
from headwater.runners.base import Runner
from headwater.store.base import (
    Channel,
    InsertOutcome,
    JobRecord,
    JobStatus,
    LogLine,
    LogRecord,
    LogStream,
    PauseKind,
    Store,
)
from headwater.store.ids import parse_tags, tag_signature
from headwater.store.retention import RetentionPolicy, run_retention
from headwater.store.sql import SqlStore, open_store
from headwater.telemetry.job_metrics import JobMetrics
from headwater.telemetry.tracing import Tracing, tracing_from_env
from headwater.triggers.consumers import (
    consumer_env,
    consumer_line_hook,
    consumer_resume_env,
    consumer_trigger,
)
from headwater.triggers.context import CallbackTriggerContext
from headwater.triggers.emitter import LocalEmitter
from headwater.triggers.event_source import (
    CONSUMER_SOURCE_TYPE,
    EventSourceManager,
    iso,
    trigger_key,
)
from headwater.triggers.owner import TriggerOwner
from headwater.triggers.pause import PausedTriggers, set_paused
from headwater.triggers.receivers.manager import ReceiverManager
from headwater.triggers.scheduler import Scheduler
from headwater.worker.secret_guard import SecretGuard
from headwater.worker.worker import Worker, WorkerSettings
from headwater.workspace import load_workspace
from headwater.workspace.models import (
    ABILITY_TAGS,
    EventSourceTrigger,
    RunnerKind,
    SchedulerTrigger,
    Workspace,
)
from headwater.workspace.multi import watched_paths
from headwater.workspace.secret_refs import seal
from headwater.workspace.secrets import Redactor, resolve_secrets
from headwater.workspace.templating import TemplateEngine

__all__ = [
    "EMBEDDED_RUNNER_TAGS",
    "Node",
    "NodeSettings",
    "WorkspaceHolder",
    "freeze_startup_heap",
]

EMBEDDED_RUNNER_TAGS = ABILITY_TAGS | frozenset(RUNNER_TAGS.values())

log = structlog.get_logger(__name__)


class WorkspaceHolder:
    """The current workspace, its resolved secrets and redactor; swapped on reload."""

    def __init__(
        self,
        path: Path,
        environ: Mapping[str, str] | None = None,
        loader: Callable[[Path], Workspace] = load_workspace,
    ) -> None:
        self.path = path
        self._environ = environ if environ is not None else os.environ
        self._loader = loader
        self.workspace: Workspace = loader(path)
        self.secrets: dict[str, str] = resolve_secrets(self.workspace, self._environ)
        self.redactor = Redactor(list(self.secrets.values()))
        self._signatures: list[str] = []
        self._signatures_of: Workspace | None = None

    def reload(self) -> Workspace:
        """Load again; on error the previous workspace stays in force (and the error is
        raised for the caller to report)."""
        workspace = self._loader(self.path)
        secrets = resolve_secrets(workspace, self._environ)
        self.workspace, self.secrets = workspace, secrets
        self.redactor = Redactor(list(secrets.values()))
        return workspace

    def tag_signatures(self) -> list[str]:
        """Every tag signature a job of the workspace can carry (see ``tag_sets``)."""
        ws = self.workspace
        if self._signatures_of is not ws:  # the worker asks before every claim
            self._signatures = sorted({tag_signature(tags) for tags in tag_sets(ws)})
            self._signatures_of = ws
        return list(self._signatures)

    all_signatures = tag_signatures


@dataclass(frozen=True, slots=True)
class NodeSettings:
    db_url: str
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    run_worker: bool = True
    kill_grace: float = 5.0
    max_line_bytes: int = 1_048_576
    extra_tag_signatures: tuple[str, ...] = ()
    # The embedded worker's own tags (``--tags``), on top of every runner's: a step that
    # needs a tag it lacks waits for a worker that has it.
    worker_tags: frozenset[str] = frozenset()
    # Delete old finished jobs, logs and rejected events (``--retention``); None keeps all.
    retention: RetentionPolicy | None = None
    # Where the files steps leave in ``$ARTIFACTS_DIR`` are kept; None keeps none (a
    # step that writes some fails, saying so).
    artifacts_dir: Path | None = None


class Node:
    """``loader`` builds the workspace from ``workspace_path`` (YAML by default; the SDK
    passes one that imports a Python module); ``functions`` are ``type: function``
    callables already in hand, by ref."""

    def __init__(
        self,
        workspace_path: Path,
        settings: NodeSettings,
        *,
        loader: Callable[[Path], Workspace] = load_workspace,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        # OpenTelemetry spans of jobs: given, or set up from HEADWATER_OTEL / OTEL_*.
        self.tracing = tracing if tracing is not None else tracing_from_env()
        self.holder = WorkspaceHolder(workspace_path, loader=loader)
        self._functions = dict(functions or {})
        self.store: Store  # set by start()
        self.templates = TemplateEngine()
        self.on_reload: list[Callable[[Workspace], None]] = []
        # Set before start() by ``headwater server``: serve only the triggers whose lease
        # this process holds (None: every trigger, as ``headwater up`` does).
        self.owner: TriggerOwner | None = None
        # The series this node observes; each HTTP app serving it exposes them.
        self.job_metrics = JobMetrics()
        self._started = False
        self._claimable: tuple[Workspace | None, list[str]] = (None, [])
        self.artifacts: ArtifactStore | None = (
            ArtifactStore(settings.artifacts_dir) if settings.artifacts_dir is not None else None
        )

    # -- Runtime protocol (used by the HTTP app) -------------------------------------------
    def workspace(self) -> Workspace:
        return self.holder.workspace

    async def submit(
        self,
        task: str,
        input: Mapping[str, Any],
        *,
        source_type: str = "api",
        source_id: str | None = None,
        dedup_key: str | None = None,
    ) -> InsertOutcome:
        return await self.dispatcher.submit(
            Event(task, input, source_type, source_id=source_id, dedup_key=dedup_key)
        )

    def redact(self, data: Any) -> Any:
        return self.holder.redactor.redact(data)

    def health(self) -> Mapping[str, Any]:
        worker = "disabled"
        if self.worker is not None:
            worker = "ok" if self.worker.ready.is_set() else "starting"
        return {"worker": worker, "workspace": self.holder.workspace.name}

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, store: Store | None = None) -> None:
        """Open the store (or take ``store``, already open: the node closes it)."""
        self.store = store if store is not None else await open_store(self.settings.db_url)
        self.dispatcher = Dispatcher(
            self.store, self.workspace, observe=self.job_metrics.event, tracing=self.tracing
        )
        self.batching = BatchingDispatcher(self.dispatcher)
        # Debounced and batched events become jobs when their buffer is due.
        self.flusher = Flusher(self.store)
        self.dispatcher.gatherer.on_buffered = self.flusher.wake
        self.hooks = HookFirer(
            self.store, self.dispatcher, self.workspace, self.templates, lambda: self.holder.secrets
        )
        self.logs = LogWriter(self.store, redact=self._redact_text)
        self.logs.start()
        self.functions = FunctionCache(self._functions, threads=self.settings.worker.concurrency)
        # What the worker side stores: secret references filled in, outputs masked.
        self.control = SecretGuard(
            self.store, lambda: self.holder.secrets, lambda: self.holder.redactor
        )
        runners: dict[RunnerKind, Runner] = await open_runners()
        self.steps = StepRunner(
            control=self.control,
            logs=self.logs,
            templates=self.templates,
            runners=runners,
            secrets=lambda: self.holder.secrets,
            submit_child=self._submit_child,
            line_hook=self._line_hook,
            extra_env=self._extra_env,
            resume_env=self._resume_env,
            kill_grace=self.settings.kill_grace,
            max_line_bytes=self.settings.max_line_bytes,
            functions=self.functions,
            artifacts=self.artifacts,
            workflow_store=self.store,
            start_job=self._start_workflow,
        )
        self.emitter = LocalEmitter(self.store, self.dispatcher)
        # Paused triggers (``headwater pause``), read from the store by every server.
        self.paused_triggers = PausedTriggers(self.store)
        self.event_sources = EventSourceManager(
            self.store, self.dispatcher, self.workspace, owner=self.owner,
            paused=self.paused_triggers,
        )  # fmt: skip
        self.receivers = ReceiverManager(
            self.store,
            self.dispatcher,
            self.workspace,
            self.templates,
            lambda: self.holder.secrets,
            owner=self.owner,
            on_error=self.job_metrics.receiver_error,
            paused=self.paused_triggers,
        )
        self.trigger_ctx = CallbackTriggerContext(
            store=self.store,
            dispatcher=self.batching,
            templates=self.templates,
            workspace=self.workspace,
            secrets=lambda: self.holder.secrets,
            redact=self.redact,
            refresh=self.reload_workspace,
            paused=self.paused_triggers,
        )
        self.scheduler = Scheduler(self.trigger_ctx, owner=self.owner, paused=self.paused_triggers)
        for manager in (self.event_sources, self.receivers, self.scheduler):
            self.paused_triggers.on_change(manager.wake)
        self.executor = JobExecutor(self.steps, tracing=self.tracing)
        self.worker: Worker | None = None
        if self.settings.run_worker:
            self.worker = Worker(
                self.control,
                self.executor,
                self.logs,
                self.workspace,
                self._tag_signatures,
                self.settings.worker,
                tags=self.worker_tags,
                is_long_running=_is_consumer,
                on_finished=self._job_finished,
                on_suspended=self._job_suspended,
                on_claimed=self.job_metrics.claimed,
                on_store_error=self.job_metrics.store_error,
            )
        self._started = True

    async def _job_suspended(self, job: JobRecord, steps: Sequence[str]) -> None:
        try:
            await self.hooks.fire_suspended(job.id, steps)
        except HeadwaterError:  # best effort: the wait stands
            log.exception("hooks_failed", job_id=job.id)

    async def _job_finished(self, job: JobRecord, status: JobStatus) -> None:
        self.job_metrics.finished(job, status.value)
        await self.hooks.fire_finished(job, status)

    async def job_cancelled(self, job: JobRecord) -> None:
        """JobFinishObserver: a job cancelled before a worker took it fires on_cancel."""
        await self.hooks.fire_finished(job, JobStatus.CANCELLED)

    # -- trigger state and control (TriggerStateProvider, TriggerControl) -----------------
    async def trigger_states(self) -> Mapping[str, Mapping[str, Any]]:
        ws = self.holder.workspace
        states = await self.event_sources.states()
        cursors = {c.trigger: c for c in await self.store.list_cursors()}
        result: dict[str, dict[str, Any]] = {
            name: dict(state) for name, state in self.scheduler.trigger_states().items()
        }
        for name, trigger in ws.triggers.items():
            if not isinstance(trigger, EventSourceTrigger):
                continue
            key = trigger_key(ws.name, name)
            st = states.get(key)
            # Not reconciled yet: about to start (backoff with no delay) or disabled.
            phase = st.phase.value if st else ("backoff" if trigger.enabled else "disabled")
            result[name] = {
                "state": phase,
                "consumer_job_id": st.consumer_job_id if st else None,
                "restarts": st.restarts if st else 0,
                "consecutive_failures": st.consecutive_failures if st else 0,
                "next_restart_at": iso(st.next_restart_at) if st else None,
                "quarantined_at": iso(st.quarantined_at) if st else None,
                "idle_reason": st.idle_reason if st else None,
                "last_error": self.emitter.error(key) or (st.last_error if st else None),
                "in_flight": await self.store.count_in_flight(key),
                "max_in_flight": trigger.max_in_flight,
                "events_accepted": await self.store.count_source(key),
                "events_rejected": await self.store.count_rejected(key),
                "cursor": cursors[key].cursor if key in cursors else None,
                "cursor_updated_at": (
                    cursors[key].updated_at.isoformat().replace("+00:00", "Z")
                    if key in cursors
                    else None
                ),
            }
        result.update(await self.receivers.states())
        if self.owner is not None:  # several servers: say where each trigger is served
            for name, trigger in ws.triggers.items():
                if name not in result and not isinstance(trigger, SchedulerTrigger):
                    continue
                here = self.owner.owns(name)
                entry = result.setdefault(name, {})
                entry["owned_here"] = here
                if not here and not isinstance(trigger, EventSourceTrigger):
                    entry["state"] = "elsewhere"  # another server fires or reads it
        # Debounce/batch: events waiting for their job (in the store: the same everywhere).
        for source_id, plan in self.dispatcher.gatherer.plans(ws).items():
            waiting = await self.store.count_buffered(source_id)
            result.setdefault(plan.trigger, {})["buffered"] = waiting
        return result

    # -- flow control (FlowControl): pause and resume, re-run from a step ---------------
    async def set_paused(self, kind: PauseKind, name: str, paused: bool) -> Mapping[str, Any]:
        ws = self.holder.workspace
        return await set_paused(self.store, ws, kind, name, paused, self.paused_triggers)

    async def rerun_from(self, job: JobRecord, step: str) -> str:
        return await rerun_from(self.dispatcher, self.holder.workspace, job, step)

    def _event_source_key(self, name: str) -> str:
        ws = self.holder.workspace
        trigger = ws.triggers.get(name)
        if not isinstance(trigger, EventSourceTrigger):
            raise NotFoundError(f"no event_source trigger named {name!r} in workspace {ws.name!r}")
        return trigger_key(ws.name, name)

    async def restart_trigger(self, name: str) -> Mapping[str, Any]:
        state = await self.event_sources.restart(self._event_source_key(name))
        return state.to_json()

    async def release_trigger(self, name: str) -> Mapping[str, Any]:
        state = await self.event_sources.release(self._event_source_key(name))
        return state.to_json()

    async def reload_workspace(self) -> Mapping[str, Any]:
        ws = self.holder.reload()
        self.functions.reload()  # edited function modules run their new code
        self.event_sources.wake()
        self.scheduler.wake()
        self.receivers.wake()
        for callback in self.on_reload:
            callback(ws)
        log.info("workspace_reloaded", workspace=ws.name, tasks=len(ws.tasks))
        return {"workspace": ws.name, "tasks": len(ws.tasks), "triggers": len(ws.triggers)}

    async def watch_workspace(self, stop: asyncio.Event) -> None:
        """Reload when a workspace file changes (a broken edit keeps the previous one)."""
        from watchfiles import awatch

        async for _changes in awatch(
            *watched_paths(self.holder.path), stop_event=stop, debounce=300
        ):
            try:
                await self.reload_workspace()
            except HeadwaterError as exc:
                log.error("workspace_reload_failed", error=str(exc))

    # -- event sources -------------------------------------------------------------------
    def consumer_trigger(self, job: JobRecord) -> tuple[str, EventSourceTrigger] | None:
        """The event-source trigger a consumer job serves (None for other jobs)."""
        return consumer_trigger(self.holder.workspace, job)

    def _line_hook(self, job: JobRecord, step: str, step_attempt: int) -> LineHook | None:
        h = self.holder
        return consumer_line_hook(
            h.workspace,
            self.templates,
            h.secrets,
            job,
            step,
            step_attempt,
            lambda key, trigger: self.emitter,
            self.logs,
        )

    def _extra_env(self, job: JobRecord) -> Mapping[str, str]:
        return consumer_env(self.holder.workspace, self.templates, self.holder.secrets, job)

    async def _resume_env(self, job: JobRecord) -> Mapping[str, str]:
        return await consumer_resume_env(self.holder.workspace, job, self.read_cursor)

    async def read_cursor(self, key: str) -> str | None:
        """An event-source trigger's last committed cursor."""
        record = await self.store.get_cursor(key)
        return record.cursor if record is not None else None

    @property
    def worker_tags(self) -> frozenset[str]:
        """The embedded worker's tags: every runner's (a missing runner fails its steps
        with the reason) and its own (``NodeSettings.worker_tags``)."""
        return EMBEDDED_RUNNER_TAGS | self.settings.worker_tags

    def _tag_signatures(self) -> Sequence[str]:
        # Asked before every claim: worked out again only after a workspace reload.
        ws = self.holder.workspace
        if self._claimable[0] is not ws:
            tags = self.worker_tags
            mine = [s for s in self.holder.tag_signatures() if parse_tags(s) <= tags]
            self._claimable = (ws, [*mine, *self.settings.extra_tag_signatures])
        return self._claimable[1]

    def _redact_text(self, text: str) -> str:
        return self.holder.redactor.redact_text(text)

    async def _submit_child(
        self, parent: JobRecord, step: str, task: str, payload: Mapping[str, Any]
    ) -> str:
        # A child of a ``headwater run`` job is claimed by that same process only.
        pinned = frozenset(t for t in parent.tags if t.startswith("run:")) or None
        (outcome,) = await self.dispatcher.dispatch(
            [
                Event(
                    task,
                    seal(payload, self.holder.secrets, parent.id),  # no secret stored
                    "task",
                    source_id=parent.id,
                    dedup_key=f"task:{parent.id}:{step}",
                    parent_job_id=parent.id,
                    tags=pinned,
                )
            ]
        )
        if outcome.status is DispatchStatus.REJECTED:
            raise InputValidationError(task, [outcome.reason or "rejected"])
        assert outcome.job_id is not None
        return outcome.job_id

    async def _start_workflow(self, start: WorkflowStart) -> InsertOutcome:
        """A workflow run (``headwater.start_workflow``): its id is the job's dedup key."""
        return await self.dispatcher.submit(workflow_event(start))

    async def close(self) -> None:
        if not self._started:
            return
        self.emitter.close()
        await self.batching.close()
        await self.logs.close()
        await close_runners(self.steps.runners)
        await self.store.close()
        self._started = False

    async def run_worker(self, stop: asyncio.Event) -> None:
        if self.worker is not None:
            # Waiting workflows go back in the queue when their wait is over.
            woken = self.worker.look_for_work
            timers = asyncio.create_task(
                run_workflow_timers(self.store, stop, woken), name="wf-timers"
            )
            # New jobs of this process may go straight to its idle slots (store.handoff).
            local = self.store if isinstance(self.store, SqlStore) else None
            if local is not None:
                local.set_local_slots(self.worker)
            try:
                await self.worker.run(stop)
            finally:
                if local is not None:
                    local.set_local_slots(None)
                timers.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timers

    async def run_triggers(self, stop: asyncio.Event, watch: bool = True) -> None:
        """Every trigger (and the workspace watcher) until ``stop``."""
        with contextlib.suppress(Exception):  # paused triggers stay stopped from the start
            await self.paused_triggers.refresh()
        tasks = [
            asyncio.create_task(self.paused_triggers.run(stop), name="paused-triggers"),
            asyncio.create_task(self.event_sources.run(stop), name="event-sources"),
            asyncio.create_task(self.scheduler.run(stop), name="scheduler"),
            asyncio.create_task(self.receivers.run(stop), name="receivers"),
            asyncio.create_task(self.flusher.run(stop), name="gather-flush"),
        ]
        if watch:
            tasks.append(asyncio.create_task(self.watch_workspace(stop), name="watch"))
        retention = self.settings.retention
        if retention is not None and not retention.empty:
            tasks.append(
                asyncio.create_task(run_retention(self.store, retention, stop), name="retention")
            )
            if self.artifacts is not None:  # a deleted job's artifacts go too
                sweep = self.artifacts.run_sweep(self.store, stop)
                tasks.append(asyncio.create_task(sweep, name="artifact-sweep"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def run_one(
        self,
        task: str,
        job_input: Mapping[str, Any],
        on_logs: Callable[[list[LogRecord]], None] | None = None,
        on_created: Callable[[str], None] | None = None,
    ) -> JobRecord:
        """Submit one job and run it in this process (``headwater run``), handing its log
        lines to ``on_logs`` as they are stored and its id to ``on_created``."""
        signature = f"run:{uuid.uuid4().hex}"
        event = Event(task, job_input, "cli", tags=frozenset({signature}))
        stop = asyncio.Event()
        worker = Worker(
            self.control,
            self.executor,
            self.logs,
            self.workspace,
            lambda: [signature],
            self.settings.worker,
        )
        with (
            self.store.subscribe(Channel.FINISHED) as finished,
            self.store.subscribe(Channel.LOGS) as logs,
        ):
            outcome = await self.dispatcher.submit(event, counted=False)
            if on_created is not None:
                on_created(outcome.id)
            runner = asyncio.create_task(worker.run(stop))
            job_id, after = outcome.id, 0

            async def pull() -> None:
                nonlocal after
                if on_logs is not None:
                    records = await self.store.get_logs(job_id, after_seq=after)
                    if records:
                        after = records[-1].seq
                        on_logs(records)

            try:
                while True:
                    await pull()
                    record = await self.store.get_job(job_id)
                    if record is None:
                        raise HeadwaterError(f"job {job_id} disappeared")
                    if record.suspended:
                        break  # a suspended job waits for `headwater approve` on a server
                    if record.status.is_terminal:
                        # A task retry runs here too; the last attempt is the result.
                        await self.logs.flush()
                        retry = await self.hooks.retry(record, tags=frozenset({signature}))
                        if retry is None:
                            break
                        await pull()
                        job_id, after = retry, 0
                        continue
                    if runner.done():
                        runner.result()  # surfaces a worker crash
                        raise HeadwaterError("the worker stopped before the job finished")
                    waits = [
                        asyncio.ensure_future(finished.wait(2.0)),
                        asyncio.ensure_future(logs.wait(2.0)),
                    ]
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for w in waits:
                        w.cancel()
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await runner
        await self.logs.flush()
        final = await self.store.get_job(job_id)
        assert final is not None
        await self._run_hooks(final, signature)
        return final

    async def _run_hooks(self, job: JobRecord, signature: str) -> None:
        """``headwater run``: the finished job's hooks run here too, to their end."""
        hook_ids = await self.hooks.fire(job, tags=frozenset({signature}))
        if not hook_ids:
            return
        stop = asyncio.Event()
        worker = Worker(
            self.store,
            self.executor,
            self.logs,
            self.workspace,
            lambda: [signature],
            self.settings.worker,
        )
        with self.store.subscribe(Channel.FINISHED) as finished:
            runner = asyncio.create_task(worker.run(stop))
            try:
                while True:
                    hooks = await self.store.get_jobs(hook_ids)
                    if all(h.status.is_terminal for h in hooks) or runner.done():
                        break
                    await finished.wait(2.0)
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await runner
        now = datetime.now(UTC)
        await self.store.append_logs(
            [
                LogLine(job.id, None, LogStream.SYSTEM, _hook_line(h), now)
                for h in sorted(hooks, key=lambda h: h.created_at)
            ]
        )
        await self.logs.flush()


def _hook_line(hook: JobRecord) -> str:
    line = f"hook job {hook.id} ({hook.task}): {hook.status.value}"
    return f"{line}: {hook.error}" if hook.error else line


# Allocations between two young collections in a long-running process (CPython: 700).
GC_YOUNG_THRESHOLD = 10_000


def freeze_startup_heap() -> None:
    """Exempt what exists after start-up from the garbage collector's full collections.

    A long-running process (``headwater up``) holds some 100k long-lived objects from its
    imports (SQLAlchemy, pydantic, the workspace). Every full collection walks them all:
    measured 80 ms at 1,000 events/s, which was the whole p99 of event → step start.
    Frozen objects are never freed, so this is for a process's start-up, once, not for
    code that makes many nodes (tests).

    It also makes young collections ten times rarer (every 10,000 allocations, not 700):
    an event source allocates a few containers per event, nearly all freed by their
    reference count, and at 50,000 events/s the collections that walked the ones still
    in flight cost 1.5-2 µs per event (bench/ingest_stages.py). Only garbage in cycles
    waits longer to be freed."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _is_consumer(job: JobRecord) -> bool:
    return job.source_type == CONSUMER_SOURCE_TYPE
