"""``HttpControlPlane``: the ControlPlane of a remote worker, over HTTP to the servers.

One ``httpx.AsyncClient`` (keep-alive, HTTP/1.1) for everything. Log lines, step
records and results go out in order through one ``SyncQueue`` (one request carries all
that accumulated meanwhile); a result's request also claims the next jobs for the slots
it frees. A request that cannot
reach a server (refused, reset, 502-504) moves on to the next server of the list and is
retried with backoff, so a worker rides through a server's death; errors the server
answers (4xx) are raised.

Wake-ups: ``claim_jobs`` is a long-poll, answered as soon as a job for this worker's tags
exists; when it comes back empty the local ``JOBS`` channel is poked so the claim loop
asks again at once. Cancels come with heartbeats (and a fenced-off consumer is stopped at
once through the local ``CANCEL`` channel). ``FINISHED`` waits (a sub-task following its
child) are long-polls on the jobs this worker looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from headwater.distributed.wire import ConsumerLease, job_from_wire, log_to_wire, step_to_wire
from headwater.errors import (
    AuthError,
    ConflictError,
    HeadwaterError,
    InputValidationError,
    NotFoundError,
    ServerUnavailableError,
    StaleConsumerError,
)
from headwater.store.base import (
    Channel,
    JobRecord,
    JobStatus,
    LogLine,
    RecoveredJob,
    StepUpdate,
    WorkerRecord,
)
from headwater.store.notify import Broadcaster, Subscription
from headwater.store.task_state import TaskStateRecord
from headwater.worker.sync_queue import SyncQueue

__all__ = ["HttpControlPlane"]

log = structlog.get_logger(__name__)

_RETRY_STATUSES = frozenset({502, 503, 504})
_MAX_REQUEST_BYTES = 4 * 1024 * 1024
_FinishRow = tuple[str, str | None, JobStatus, Any, str | None]


class HttpControlPlane:
    def __init__(
        self,
        servers: Sequence[str],
        token: str,
        tags: frozenset[str],
        *,
        claim_wait: float = 20.0,
        request_timeout: float = 30.0,
        retry_for: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not servers:
            raise ValueError("at least one server URL is needed")
        self.servers = [s.rstrip("/") for s in servers]
        self.tags = tags
        self._current = 0
        self._claim_wait = claim_wait
        self._retry_for = retry_for
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(request_timeout, connect=3.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            transport=transport,
        )
        self._broadcaster = Broadcaster()
        self._sync_queue = SyncQueue(self._sync)
        self._closing = False
        self._polls: set[asyncio.Task[Any]] = set()
        self._watched: set[str] = set()  # non-final jobs read by get_job (sub-task children)
        # Jobs claimed along with a finish (for the slots it frees), not started yet.
        self._prefetched: list[JobRecord] = []
        # Set by the remote worker process:
        self.active_jobs: Callable[[], list[str]] = list
        self.on_revision: Callable[[str], Awaitable[None]] | None = None
        self.revision: str | None = None
        self.consumer_leases: dict[str, ConsumerLease] = {}  # job id -> its consumer lease
        self.auth_failed = False
        self.on_auth_failure: Callable[[], None] | None = None

    # -- plumbing --------------------------------------------------------------------------
    @property
    def server(self) -> str:
        return self.servers[self._current]

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        retry: bool = True,
        raw: tuple[bytes, str] | None = None,
    ) -> Any:
        """JSON in (or ``raw``: bytes and their content type), JSON out, on the first
        server that answers."""
        delay = 0.05
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_for
        content = None if body is None else json.dumps(body, default=str).encode()
        content_type = "application/json"
        if raw is not None:
            content, content_type = raw
        while True:
            base = self.server
            try:
                resp = await self._client.request(
                    method,
                    base + path,
                    content=content,
                    headers={"Content-Type": content_type} if content else None,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 401:
                    self.auth_failed = True  # revoked: the worker stops (see RemoteWorker)
                    if self.on_auth_failure is not None:
                        self.on_auth_failure()
                if resp.status_code not in _RETRY_STATUSES:
                    return _answer(resp)
                problem = f"HTTP {resp.status_code}"
            if len(self.servers) > 1 and self.server == base:
                self._current = (self._current + 1) % len(self.servers)
            if not retry or self._closing or loop.time() > deadline:
                raise ServerUnavailableError(f"no headwater server answered {path}: {problem}")
            log.warning(
                "server_unreachable",
                server=base,
                path=path,
                error=problem,
                next_server=self.server,
                retry_in=round(delay, 2),
            )
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)

    async def _revision_seen(self, revision: Any) -> None:
        if isinstance(revision, str) and revision != self.revision:
            if self.on_revision is not None:
                await self.on_revision(revision)
            self.revision = revision

    def stop_waiting(self) -> None:
        """The worker stops: long-polls end now (their claim returns no job)."""
        self._closing = True
        for task in list(self._polls):
            task.cancel()

    async def close(self) -> None:
        self.stop_waiting()
        await self._sync_queue.close()
        self._broadcaster.close_all()
        await self._client.aclose()

    async def _poll(self, coro: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(coro)
        self._polls.add(task)
        try:
            return await task
        finally:
            self._polls.discard(task)

    # -- the worker's life -----------------------------------------------------------------
    async def fetch_workspace(self) -> dict[str, Any]:
        doc: dict[str, Any] = await self.request("GET", "/worker/workspace")
        return doc

    async def fetch_bundle(self) -> bytes:
        delay = 0.05
        while True:
            try:
                resp = await self._client.get(self.server + "/worker/workspace/bundle")
            except httpx.TransportError as exc:
                if self._closing:
                    raise ServerUnavailableError(f"cannot download the workspace: {exc}") from exc
                self._current = (self._current + 1) % len(self.servers)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            if resp.status_code != 200:
                _answer(resp)
            return resp.content

    async def register_worker(self, worker_id: str, name: str, tags: frozenset[str]) -> None:
        # ``tags`` are the embedded worker's tag signatures; a remote worker has its own.
        body = {"worker_id": worker_id, "name": name, "tags": sorted(self.tags)}
        answer = await self.request("POST", "/worker/register", body)
        await self._revision_seen(answer.get("revision"))

    async def heartbeat(self, worker_id: str) -> list[str]:
        leases = [
            {"trigger": le.trigger, "job_id": le.job_id, "attempt": le.attempt, "token": le.token}
            for le in self.consumer_leases.values()
        ]
        answer = await self.request(
            "POST",
            "/worker/heartbeat",
            {
                "worker_id": worker_id,
                "active": [*self.active_jobs(), *(j.id for j in self._prefetched)],
                "leases": leases,
            },
            retry=False,  # the next beat retries; a slow server must not stack them up
        )
        for job_id in answer.get("lost_leases", []):
            self.consumer_leases.pop(job_id, None)
        await self._revision_seen(answer.get("revision"))
        return [str(j) for j in answer.get("stop", [])]

    async def deregister_worker(self, worker_id: str) -> None:
        await self.request("POST", "/worker/deregister", {"worker_id": worker_id}, retry=False)

    async def list_workers(self) -> list[WorkerRecord]:
        return []  # servers know every worker; nothing on this host to clean up

    async def recover_stale_jobs(self, stale_after: float) -> list[RecoveredJob]:
        return []  # the servers sweep

    # -- jobs ------------------------------------------------------------------------------
    async def claim_jobs(
        self, worker_id: str, tag_signatures: Sequence[str], limit: int
    ) -> list[JobRecord]:
        # The server matches jobs to this worker's tags itself (``tag_signatures`` are the
        # embedded worker's notion); it answers as soon as one exists.
        if self._closing:
            return []
        if self._prefetched:
            jobs, self._prefetched = self._prefetched[:limit], self._prefetched[limit:]
            self._broadcaster.publish(Channel.JOBS.value, "*")
            return jobs
        body = {
            "worker_id": worker_id,
            "tags": sorted(self.tags),
            "limit": limit,
            "wait": self._claim_wait,
        }
        try:
            answer = await self._poll(
                self.request("POST", "/worker/claim", body, timeout=self._claim_wait + 15)
            )
        except asyncio.CancelledError:
            if self._closing:
                return []
            raise
        await self._revision_seen(answer.get("revision"))
        jobs = [job_from_wire(j) for j in answer["jobs"]]
        if len(jobs) < limit and self._prefetched:  # claimed by a finish meanwhile
            extra = limit - len(jobs)
            jobs += self._prefetched[:extra]
            self._prefetched = self._prefetched[extra:]
        if not self._closing:
            # The wait happens in the server (this long-poll), not in the claim loop: let
            # the loop ask again at once whenever it has a free slot.
            self._broadcaster.publish(Channel.JOBS.value, "*")
        return jobs

    async def finish_job(
        self,
        job_id: str,
        worker_id: str | None,
        status: JobStatus,
        output: Any = None,
        error: str | None = None,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        if steps:
            # /worker/sync applies steps before results, and the server stores a step
            # record only from the worker that runs the job: as in Store.finish_job.
            await self.upsert_steps(job_id, steps)
        (changed,) = await self.finish_jobs([(job_id, worker_id, status, output, error)])
        return changed

    async def finish_jobs(self, rows: Sequence[_FinishRow]) -> list[bool]:
        results: list[dict[str, Any]] = []
        size = 0
        for job_id, _, status, output, error in rows:
            item: dict[str, Any] = {
                "job_id": job_id,
                "status": status.value,
                "output": output,
                "error": error,
            }
            lease = self.consumer_leases.pop(job_id, None)
            if lease is not None:
                item["lease"] = {
                    "trigger": lease.trigger,
                    "job_id": lease.job_id,
                    "attempt": lease.attempt,
                    "token": lease.token,
                }
            results.append(item)
            size += 200 + len(json.dumps(output, default=str)) + len(error or "")
        return await self._sync_queue.add_results(results, size)

    async def suspend_job(
        self, job_id: str, worker_id: str, waiting: Mapping[str, datetime | None]
    ) -> bool:
        # A result that is not final: the server lets the job wait (``Store.suspend_job``).
        item = {
            "job_id": job_id,
            "status": "running",
            "waiting": {k: v.isoformat() if v else None for k, v in waiting.items()},
        }
        (changed,) = await self._sync_queue.add_results([item], 300 + 100 * len(waiting))
        return changed

    async def release_job(
        self,
        job_id: str,
        worker_id: str,
        tags: frozenset[str],
        reason: str,
        steps: Sequence[StepUpdate] = (),
    ) -> bool:
        if steps:
            await self.upsert_steps(job_id, steps)
        await self.flush()  # the next worker resumes from the steps and logs written so far
        body = {"worker_id": worker_id, "job_id": job_id, "tags": sorted(tags), "reason": reason}
        answer = await self.request("POST", "/worker/release", body)
        return bool(answer.get("released"))

    async def upsert_steps(self, job_id: str, steps: Sequence[StepUpdate]) -> None:
        wire = [step_to_wire(job_id, s) for s in steps]
        size = sum(300 + len(str(s.output or "")) + len(s.error or "") for s in steps)
        await self._sync_queue.add_steps(wire, size)

    async def append_logs(self, lines: Sequence[LogLine]) -> None:
        await self._sync_queue.add_logs(
            [log_to_wire(x) for x in lines], sum(len(x.line) + 100 for x in lines)
        )

    async def flush(self, timeout: float = 30.0) -> None:
        """Until everything written so far reached a server."""
        await self._sync_queue.drain(timeout)

    async def _sync(self, batch: Any) -> list[bool]:
        body: dict[str, Any] = {
            "worker_id": self.worker_id,
            "logs": batch.logs,
            "steps": batch.steps,
            "results": batch.results,
        }
        if batch.results and not self._closing:
            # Each finished job frees a slot: claim its next job in the same round trip.
            body["claim"] = {"limit": len(batch.results), "tags": sorted(self.tags)}
        answer = await self.request("POST", "/worker/sync", body)
        for job_id in answer.get("refused", []):
            log.warning("step_record_refused", job_id=job_id, reason="job is not ours anymore")
        jobs = [job_from_wire(j) for j in answer.get("jobs", [])]
        if jobs:
            await self._revision_seen(answer.get("revision"))
            self._prefetched.extend(jobs)
            self._broadcaster.publish(Channel.JOBS.value, "*")
        return [bool(c) for c in answer.get("changed", [])]

    worker_id: str | None = None  # set by the remote worker before it starts

    async def get_job(self, job_id: str) -> JobRecord | None:
        try:
            job = job_from_wire(await self.request("GET", f"/worker/jobs/{job_id}"))
        except NotFoundError:
            self._watched.discard(job_id)
            return None
        if job.status.is_terminal:
            self._watched.discard(job_id)
        else:
            self._watched.add(job_id)
        return job

    async def get_task_state(self, workspace: str, task: str | None) -> TaskStateRecord | None:
        answer = await self.request("POST", "/worker/state/get", {"task": task})
        doc = answer.get("snapshot")
        return TaskStateRecord.from_doc(workspace, task, doc) if doc is not None else None

    async def save_task_state(self, snapshot: TaskStateRecord) -> None:
        body = {"task": snapshot.task, "snapshot": snapshot.to_doc()}
        await self.request("POST", "/worker/state/put", body)

    async def upload_artifacts(self, job_id: str, step: str, archive: bytes) -> int:
        """A step's artifacts (tar.gz) to the server, which keeps them; how many."""
        path = f"/worker/artifacts/{quote(job_id, safe='')}/{quote(step, safe='')}"
        answer = await self.request("POST", path, raw=(archive, "application/gzip"))
        return int(answer.get("kept", 0))

    async def request_cancel(self, job_id: str) -> JobRecord:
        return job_from_wire(await self.request("POST", f"/worker/jobs/{job_id}/cancel"))

    async def submit_child(self, parent: JobRecord, step: str, task: str, payload: Any) -> str:
        answer = await self.request(
            "POST",
            f"/worker/jobs/{parent.id}/children",
            {"worker_id": self.worker_id, "step": step, "task": task, "input": dict(payload)},
        )
        return str(answer["job_id"])

    async def wait_jobs(self, timeout: float) -> None:
        ids = sorted(self._watched)
        if not ids:
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(asyncio.CancelledError):
            await self._poll(
                self.request(
                    "POST",
                    "/worker/jobs/wait",
                    {"job_ids": ids[:1000], "timeout": timeout},
                    timeout=timeout + 15,
                )
            )

    # -- event sources (used by RemoteEmitter) -----------------------------------------------
    def stop_job(self, job_id: str) -> None:
        """Stop a job now (its consumer was fenced off): the worker's cancel channel."""
        self._broadcaster.publish(Channel.CANCEL.value, job_id)

    # -- wake-ups --------------------------------------------------------------------------
    def subscribe(self, channel: Channel) -> Subscription:
        if Channel(channel) is Channel.FINISHED:
            return _FinishedSubscription(self._broadcaster, self)
        return self._broadcaster.subscribe(Channel(channel).value)


class _FinishedSubscription(Subscription):
    """``wait`` long-polls the server until one of the watched jobs is final."""

    def __init__(self, broadcaster: Broadcaster, control: HttpControlPlane) -> None:
        super().__init__(broadcaster, Channel.FINISHED.value)
        self._control = control

    async def wait(self, timeout: float | None = None) -> list[str]:
        await self._control.wait_jobs(timeout if timeout is not None else 20.0)
        return ["*"]

    def close(self) -> None:
        self.closed = True


def _answer(resp: httpx.Response) -> Any:
    if resp.status_code < 400:
        return resp.json() if resp.content else None
    try:
        error = resp.json().get("error", {})
        message, kind = str(error.get("message", resp.text)), str(error.get("type", ""))
    except (ValueError, AttributeError):
        message, kind = resp.text[:500], ""
    if resp.status_code == 401:
        raise AuthError(message)
    if resp.status_code == 404:
        raise NotFoundError(message)
    if kind == "stale_consumer":
        raise StaleConsumerError(message)
    if resp.status_code == 409:
        raise ConflictError(message)
    if resp.status_code == 422 and kind == "invalid_input":
        raise InputValidationError("?", [message])
    raise HeadwaterError(f"the server answered {resp.status_code}: {message}")
