"""``headwater worker``: a worker on another host, talking to the servers over HTTP.

It runs the very Worker, JobExecutor and StepRunner of the embedded mode, over an
``HttpControlPlane``. The workspace comes from the server: its files as a tar.gz cached by
checksum under ``cache_dir``, its secrets resolved by the server and kept in memory only
(they render templates and are masked in every log line). When the server announces a
new revision (after a workspace reload) the worker loads it before its next job. Durable
workflows keep their records through the servers (``worker.workflow_backend``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import structlog

from headwater.distributed.bundle import is_cached, unpack_bundle
from headwater.distributed.tokens import parse_token
from headwater.distributed.wire import ConsumerLease
from headwater.engine.executor import JobExecutor
from headwater.engine.logwriter import LogWriter
from headwater.engine.steps import LineHook, StepRunner
from headwater.errors import AuthError, ConflictError, StaleConsumerError
from headwater.runners import RUNNER_TAGS, close_runners, open_runners, runner_tags
from headwater.store.base import JobRecord, Store
from headwater.telemetry.tracing import tracing_from_env
from headwater.triggers.consumers import consumer_env, consumer_line_hook, consumer_resume_env
from headwater.triggers.emitter import EmitBatch, EmitResult
from headwater.triggers.event_source import CONSUMER_SOURCE_TYPE
from headwater.worker.http_control import HttpControlPlane
from headwater.worker.remote_artifacts import RemoteArtifacts
from headwater.worker.secret_guard import SecretGuard
from headwater.worker.worker import Worker, WorkerSettings
from headwater.worker.workflow_backend import RemoteWorkflowStore
from headwater.workspace.models import EventSourceTrigger, Workspace
from headwater.workspace.secret_refs import seal
from headwater.workspace.secrets import Redactor
from headwater.workspace.templating import TemplateEngine

__all__ = ["RemoteEmitter", "RemoteWorker", "RemoteWorkerSettings"]

log = structlog.get_logger(__name__)

_MAX_EMIT_EVENTS = 2000
_MAX_EMIT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RemoteWorkerSettings:
    servers: tuple[str, ...]
    token: str
    tags: frozenset[str] | None = None  # None: the tags of the runners this process has
    name: str | None = None
    cache_dir: Path = Path(".headwater") / "worker-cache"
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    claim_wait: float = 20.0
    kill_grace: float = 5.0
    max_line_bytes: int = 1_048_576


class _RemoteWorkspace:
    """The server's workspace as this worker knows it."""

    def __init__(self, control: HttpControlPlane, cache_dir: Path) -> None:
        self._control = control
        self._cache_dir = cache_dir
        self.workspace: Workspace | None = None
        self.secrets: dict[str, str] = {}
        self.redactor = Redactor([])
        self.revision: str | None = None
        self._lock = asyncio.Lock()

    async def refresh(self, announced: str | None = None) -> None:
        async with self._lock:
            if announced is not None and announced == self.revision:
                return
            doc = await self._control.fetch_workspace()
            sha = str(doc["bundle_sha256"])
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            archive = (
                None if is_cached(self._cache_dir, sha) else await self._control.fetch_bundle()
            )
            workspace = await asyncio.to_thread(
                unpack_bundle, archive, sha, self._cache_dir, str(doc["name"]), str(doc["entry"])
            )
            self.workspace = workspace
            self.secrets = {str(k): str(v) for k, v in dict(doc.get("secrets", {})).items()}
            self.redactor = Redactor(list(self.secrets.values()))
            self.revision = str(doc["revision"])
            log.info("workspace_loaded", workspace=workspace.name, revision=self.revision)

    def current(self) -> Workspace:
        assert self.workspace is not None, "refresh() first"
        return self.workspace


class RemoteEmitter:
    """The Emitter of one consumer run: ``POST /worker/event-source/emit``, fenced.

    The first emit takes the trigger's consumer lease and gets its fencing token; the
    token goes with every later emit and with the heartbeats that renew the lease. A
    server that says the token is stale (the job was recovered and runs elsewhere) gets
    this consumer stopped at once; its events are dropped on purpose, because the current
    consumer owns the stream now."""

    def __init__(
        self, control: HttpControlPlane, trigger: str, job: JobRecord, max_in_flight: int | None
    ) -> None:
        self._control = control
        self._trigger = trigger
        self._job = job
        self._max_in_flight = max_in_flight
        self._counted: int | None = None  # from the last answer, used once
        self._fenced = False

    async def emit(self, batch: EmitBatch) -> EmitResult:
        if self._fenced:
            return EmitResult(0, 0, 0, 0, refused=len(batch.events))
        accepted = duplicates = rejected = 0
        in_flight = 0
        offset = 0  # of the chunk in batch.events
        chunks = _chunks(batch.events)
        for n, chunk in enumerate(chunks, 1):
            reasons = batch.rejected
            lease = self._control.consumer_leases.get(self._job.id)
            body = {
                "worker_id": self._control.worker_id,
                "trigger": self._trigger,
                "consumer_job_id": self._job.id,
                "attempt": self._job.attempt,
                "token": lease.token if lease is not None else None,
                "events": [
                    _wire_event(k, p, reasons.get(offset + j) if reasons else None)
                    for j, (k, p) in enumerate(chunk)
                ],
                # Stored with the last chunk's jobs: it covers every chunk before it.
                "cursor": batch.cursor if n == len(chunks) else None,
            }
            try:
                answer = await self._control.request("POST", "/worker/event-source/emit", body)
            except StaleConsumerError as exc:
                log.error(
                    "consumer_fenced_off",
                    trigger=self._trigger,
                    job_id=self._job.id,
                    reason=str(exc),
                )
                self._fenced = True
                self._control.consumer_leases.pop(self._job.id, None)
                self._control.stop_job(self._job.id)
                return EmitResult(accepted, duplicates, rejected, in_flight, refused=len(chunk))
            except ConflictError as exc:  # the previous consumer's lease is still live
                log.info("consumer_lease_busy", trigger=self._trigger, reason=str(exc))
                raise
            self._control.consumer_leases[self._job.id] = ConsumerLease(
                self._trigger, self._job.id, self._job.attempt, int(answer["token"])
            )
            accepted += int(answer["accepted"])
            duplicates += int(answer["duplicates"])
            rejected += int(answer["rejected"])
            in_flight = int(answer["in_flight"])
            offset += len(chunk)
        self._counted = in_flight
        return EmitResult(accepted, duplicates, rejected, in_flight)

    async def in_flight(self, trigger: str) -> int:
        if self._counted is not None:
            counted, self._counted = self._counted, None
            return counted
        return await self._room(below=1, timeout=0.0)

    async def wait_for_finished(self, timeout: float) -> None:
        below = self._max_in_flight if self._max_in_flight else 1
        self._counted = await self._room(below=below, timeout=timeout)

    async def _room(self, below: int, timeout: float) -> int:
        answer = await self._control.request(
            "POST",
            "/worker/event-source/wait",
            {"trigger": self._trigger, "below": below, "timeout": timeout},
            timeout=timeout + 15,
        )
        return int(answer["in_flight"])


_Events = Sequence[tuple[str, Mapping[str, Any]]]


def _wire_event(key: str, payload: Mapping[str, Any], rejected: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"key": key, "payload": dict(payload)}
    if rejected is not None:
        event["rejected"] = rejected
    return event


def _chunks(events: _Events) -> list[_Events]:
    chunks: list[_Events] = []
    start, size = 0, 0
    for i, (key, payload) in enumerate(events):
        size += len(key) + len(str(payload))
        if i - start + 1 >= _MAX_EMIT_EVENTS or size >= _MAX_EMIT_BYTES:
            chunks.append(events[start : i + 1])
            start, size = i + 1, 0
    if start < len(events):
        chunks.append(events[start:])
    return chunks


class RemoteWorker:
    def __init__(self, settings: RemoteWorkerSettings) -> None:
        self.settings = settings
        self.control = HttpControlPlane(
            settings.servers,
            settings.token,
            settings.tags or frozenset({"script"}),
            claim_wait=settings.claim_wait,
        )
        self.holder = _RemoteWorkspace(self.control, settings.cache_dir)
        self.templates = TemplateEngine()
        self.worker: Worker | None = None

    async def run(self, stop: asyncio.Event) -> None:
        control = self.control
        # The server only accepts worker ids under the token's own id (see worker_bound).
        parsed = parse_token(self.settings.token)
        worker_id = f"{parsed[0] if parsed else 'w'}.{uuid.uuid4().hex[:12]}"
        control.worker_id = worker_id
        await self.holder.refresh()
        control.revision = self.holder.revision
        control.on_revision = self.holder.refresh
        logs = LogWriter(control, redact=lambda text: self.holder.redactor.redact_text(text))
        logs.start()
        runners = await open_runners()  # local, and docker / pod where configured
        if self.settings.tags is None:  # not configured: what the runners can do
            control.tags = runner_tags(runners)
        for kind, tag in RUNNER_TAGS.items():
            if tag in control.tags and kind not in runners:
                log.warning(
                    "runner_missing_for_tag",
                    tag=tag,
                    hint=f"this worker offers {tag!r} but has no {kind.value} runner: "
                    "its jobs would fail here",
                )
        log.info("worker_tags", tags=sorted(control.tags))
        # Secret references in inputs filled in, outputs and errors masked when stored.
        guarded = SecretGuard(control, lambda: self.holder.secrets, lambda: self.holder.redactor)

        async def submit_child(parent: JobRecord, step: str, task: str, payload: Any) -> str:
            sealed = seal(payload, self.holder.secrets, parent.id)
            return await control.submit_child(parent, step, task, sealed)

        workflows = RemoteWorkflowStore(control)
        steps = StepRunner(
            control=guarded,
            logs=logs,
            templates=self.templates,
            runners=runners,
            secrets=lambda: self.holder.secrets,
            submit_child=submit_child,
            line_hook=lambda job, step, n: self._line_hook(job, step, n, logs),
            extra_env=lambda job: consumer_env(
                self.holder.current(), self.templates, self.holder.secrets, job
            ),
            resume_env=lambda job: consumer_resume_env(
                self.holder.current(), job, self._read_cursor
            ),
            kill_grace=self.settings.kill_grace,
            max_line_bytes=self.settings.max_line_bytes,
            artifacts=RemoteArtifacts(control),  # kept by the server
            # Durable workflows: their records are kept by the servers (/worker/workflows).
            # It implements the store operations the workflow SDK makes, not a Store.
            workflow_store=cast(Store, workflows),
            start_job=workflows.start_job,
        )
        worker = Worker(
            guarded,
            JobExecutor(steps, tracing=tracing_from_env()),
            logs,
            self.holder.current,
            lambda: [],  # the server matches jobs to this worker's tags
            self.settings.worker,
            is_long_running=lambda job: job.source_type == CONSUMER_SOURCE_TYPE,
            worker_id=worker_id,
            tags=frozenset(control.tags),
        )
        if self.settings.name:
            worker.name = self.settings.name
        self.worker = worker
        control.active_jobs = lambda: worker.active_jobs
        control.on_auth_failure = stop.set  # the token was revoked: stop, do not spin
        stopper = asyncio.create_task(self._stop_polls(stop))
        try:
            await worker.run(stop)
        finally:
            stopper.cancel()
            await logs.close()
            await control.close()
            await close_runners(runners)
            await close_runners(runners)
        if control.auth_failed:
            raise AuthError("the server refused this worker's token (revoked?); stopped")

    async def _read_cursor(self, key: str) -> str | None:
        answer = await self.control.request("POST", "/worker/event-source/cursor", {"trigger": key})
        cursor = answer.get("cursor")
        return cursor if isinstance(cursor, str) else None

    async def _stop_polls(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.control.stop_waiting()

    def _line_hook(
        self, job: JobRecord, step: str, step_attempt: int, logs: LogWriter
    ) -> LineHook | None:
        def emitter_for(key: str, trigger: EventSourceTrigger) -> RemoteEmitter:
            return RemoteEmitter(self.control, key, job, trigger.max_in_flight)

        return consumer_line_hook(
            self.holder.current(),
            self.templates,
            self.holder.secrets,
            job,
            step,
            step_attempt,
            emitter_for,
            logs,
        )
