"""``headwater server``: the API, the triggers this server owns, the worker protocol and
(optionally) a local worker, on a database shared with other servers.

What runs in one server process:
- the HTTP API (``/api``, ``/hooks``, ``/metrics``, ``/healthz``) and ``/worker/*``;
- ``TriggerOwnership``: leases for every event-source, scheduler and receiver trigger and
  the janitor lease; the trigger managers serve only what this server holds;
- the recovery sweep (janitor only): running jobs of workers silent for ``stale_after``
  seconds go back to pending (or fail after their last attempt);
- with ``--worker``, an embedded worker claiming straight from the store;
- the wake-up loop of waiting workflows (``engine.workflow_timers``): the embedded
  worker's, or without one its own, for the workflows remote workers run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from headwater.app.serve import Background, Http, serve
from headwater.distributed.ownership import TriggerOwnership
from headwater.distributed.tokens import WorkerTokenVerifier
from headwater.engine.workflow_timers import run_workflow_timers
from headwater.node import Node, NodeSettings
from headwater.server.worker_service import WorkerService, WorkerServiceSettings
from headwater.store.base import Store
from headwater.store.retention import RetentionPolicy
from headwater.store.sql import open_store
from headwater.worker.worker import WorkerSettings
from headwater.workspace.models import Workspace

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ServerSettings", "run_server"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    workspace: Path
    db_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: tuple[str, ...] = ()
    run_worker: bool = False
    concurrency: int = 8
    stale_after: float = 10.0  # a worker silent this long loses its jobs
    lease_ttl: float = 6.0  # a dead server's triggers move after at most ttl + 1 s
    recovery_interval: float = 1.0
    retention: RetentionPolicy | None = None  # --retention / --log-retention
    # Where steps' artifacts are kept (remote workers upload theirs); None keeps none.
    artifacts_dir: Path | None = None


async def _sweep(
    store: Store, ownership: TriggerOwnership, s: ServerSettings, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        if ownership.is_janitor():
            try:
                for job in await store.recover_stale_jobs(s.stale_after):
                    log.warning(
                        "job_recovered",
                        job_id=job.id,
                        task=job.task,
                        requeued=job.requeued,
                        reason=job.reason,
                    )
            except Exception:
                log.exception("recovery_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), s.recovery_interval)


async def run_server(s: ServerSettings, say: Callable[[str], None]) -> None:
    from headwater.server.auth import require_api_key_for
    from headwater.server.routes_worker import WORKER_BODY_LIMIT, create_worker_router
    from headwater.server.routes_worker_workflows import WORKFLOW_BODY_LIMIT
    from headwater.url_secrets import hide_password

    require_api_key_for(s.host, list(s.api_keys))
    worker = WorkerSettings(
        concurrency=s.concurrency,
        stale_after=s.stale_after,
        recovery_interval=max(s.recovery_interval, 1.0),
    )
    node = Node(
        s.workspace,
        NodeSettings(
            db_url=s.db_url,
            run_worker=s.run_worker,
            worker=worker,
            retention=s.retention,
            artifacts_dir=s.artifacts_dir,
        ),
    )
    store = await open_store(s.db_url)
    ownership = TriggerOwnership(store, node.workspace, ttl=s.lease_ttl)
    node.owner = ownership
    await node.start(store)

    def wake_triggers() -> None:
        node.event_sources.wake()
        node.scheduler.wake()
        node.receivers.wake()

    ownership.on_change = wake_triggers
    protocol = WorkerServiceSettings(stale_after=s.stale_after, orphan_grace=s.stale_after)
    service = WorkerService(node, protocol)
    try:
        service.shipped()  # a workspace too large to ship fails the start, not a worker
        await ownership.check()  # take what is free before the triggers start
    except BaseException:
        say("headwater server: shutting down…")
        service.close()
        await node.close()
        raise

    def worker_routes(app: FastAPI) -> None:
        app.include_router(
            create_worker_router(service, WorkerTokenVerifier(store), node.artifacts)
        )
        app.state.body_limits["/worker"] = WORKER_BODY_LIMIT
        app.state.body_limits["/worker/workflows"] = WORKFLOW_BODY_LIMIT

    def banner(ws: Workspace) -> str:
        return (
            f"headwater server: workspace [bold]{ws.name}[/bold] ({len(ws.tasks)} tasks, "
            f"{len(ws.triggers)} triggers) · API http://{s.host}:{s.port} · "
            f"db {hide_password(s.db_url)} · worker {'on' if s.run_worker else 'off'} · "
            f"owner {ownership.owner}"
        )

    async def sweep(stop: asyncio.Event) -> None:
        await _sweep(store, ownership, s, stop)

    # Triggers, then the worker's jobs, then the leases are released; the API serves
    # remote workers until then.
    background = [
        Background("ownership", ownership.run),
        Background("triggers", node.run_triggers),
        Background("sweep", sweep),
    ]
    if s.run_worker:
        background.append(Background("worker", node.run_worker))  # with the workflow timers
    else:
        background.append(Background("workflow-timers", partial(run_workflow_timers, store)))
    await serve(
        node,
        Http(s.host, s.port, s.api_keys, graceful_shutdown=10, stop_first=False),
        say,
        label="headwater server",
        banner=banner,
        background=background,
        configure=worker_routes,
        on_stop=[service.close],
    )
