"""``headwater server``: the API, the triggers this server owns, the worker protocol and
(optionally) a local worker, on a database shared with other servers.

What runs in one server process:
- the HTTP API (``/api``, ``/hooks``, ``/metrics``, ``/healthz``) and ``/worker/*``;
- ``TriggerOwnership``: leases for every event-source, scheduler and receiver trigger and
  the janitor lease; the trigger managers serve only what this server holds;
- the recovery sweep (janitor only): running jobs of workers silent for ``stale_after``
  seconds go back to pending (or fail after their last attempt);
- with ``--worker``, an embedded worker claiming straight from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path

import structlog
from rich.console import Console

from headwater.app.embedded import EmbeddedServer
from headwater.distributed.ownership import TriggerOwnership
from headwater.distributed.tokens import WorkerTokenVerifier
from headwater.errors import HeadwaterError
from headwater.node import Node, NodeSettings, freeze_startup_heap
from headwater.server.worker_service import WorkerService, WorkerServiceSettings
from headwater.store.base import Store
from headwater.store.retention import RetentionPolicy
from headwater.store.sql import open_store
from headwater.worker.worker import WorkerSettings
from headwater.workspace.models import Workspace

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


async def run_server(s: ServerSettings, err: Console) -> None:
    import uvicorn

    from headwater.server.app import create_app
    from headwater.server.auth import require_api_key_for
    from headwater.server.routes_webhooks import create_webhook_router, max_webhook_body_bytes
    from headwater.server.routes_worker import WORKER_BODY_LIMIT, create_worker_router
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
    freeze_startup_heap()

    def wake_triggers() -> None:
        node.event_sources.wake()
        node.scheduler.wake()
        node.receivers.wake()

    ownership.on_change = wake_triggers
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    server: EmbeddedServer | None = None
    serve: asyncio.Task[None] | None = None
    service: WorkerService | None = None
    try:
        protocol = WorkerServiceSettings(stale_after=s.stale_after, orphan_grace=s.stale_after)
        service = WorkerService(node, protocol)
        service.shipped()  # a workspace too large to ship fails the start, not a worker
        await ownership.check()  # take what is free before the triggers start
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        app = create_app(node, api_keys=list(s.api_keys))
        app.include_router(create_webhook_router(node.trigger_ctx))
        verifier = WorkerTokenVerifier(store)
        app.include_router(create_worker_router(service, verifier, node.artifacts))
        app.state.body_limits["/worker"] = WORKER_BODY_LIMIT

        def hook_body_limit(ws: Workspace) -> None:
            app.state.body_limits["/hooks"] = max(max_webhook_body_bytes(ws), 1)

        hook_body_limit(node.workspace())
        node.on_reload.append(hook_body_limit)
        server = EmbeddedServer(
            uvicorn.Config(
                app,
                host=s.host,
                port=s.port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=10,
            )
        )
        ws = node.workspace()
        err.print(
            f"headwater server: workspace [bold]{ws.name}[/bold] ({len(ws.tasks)} tasks, "
            f"{len(ws.triggers)} triggers) · API http://{s.host}:{s.port} · "
            f"db {hide_password(s.db_url)} · worker {'on' if s.run_worker else 'off'} · "
            f"owner {ownership.owner}"
        )
        serve = asyncio.create_task(server.serve(), name="http")
        tasks = [
            asyncio.create_task(ownership.run(stop), name="ownership"),
            asyncio.create_task(node.run_triggers(stop), name="triggers"),
            asyncio.create_task(_sweep(store, ownership, s, stop), name="sweep"),
        ]
        if s.run_worker:
            tasks.append(asyncio.create_task(node.run_worker(stop), name="worker"))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([serve, *tasks, stopper], return_when="FIRST_COMPLETED")
        stopper.cancel()
        for t in done:
            if t is not stopper and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        if serve in done and not stop.is_set():
            raise HeadwaterError(f"the HTTP server stopped (is port {s.port} already in use?)")
    finally:
        err.print("headwater server: shutting down…")
        stop.set()
        if service is not None:
            service.close()
        for t in tasks:  # triggers, then the worker's jobs, then leases are released
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(t), 60)
        if server is not None and serve is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serve, 10)
        await node.close()
