"""``serve``: a started node behind its HTTP API until SIGINT/SIGTERM, for ``headwater up``
and ``headwater server`` alike.

Wired once here: the FastAPI app, the webhook router and its body limit (which follows
workspace reloads), uvicorn inside the node's event loop, the signal handlers, the
node's background tasks and the shutdown order. What differs between the two commands
(the worker protocol's router, trigger ownership, the recovery sweep) is handed in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from headwater.app.embedded import EmbeddedServer
from headwater.app.signals import stop_on_signals
from headwater.errors import HeadwaterError
from headwater.node import Node, freeze_startup_heap
from headwater.workspace.models import Workspace

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["Background", "Http", "serve"]


@dataclass(frozen=True, slots=True)
class Http:
    host: str
    port: int
    api_keys: tuple[str, ...] = ()
    # uvicorn's timeout_graceful_shutdown (None: wait for open connections).
    graceful_shutdown: int | None = None
    # Stop the API before the background tasks drain (``up``); ``server`` keeps it up
    # meanwhile, so remote workers can still report the jobs they finish.
    stop_first: bool = True


@dataclass(frozen=True, slots=True)
class Background:
    """A task run beside the API until ``stop``; shutdown waits ``grace`` seconds for it
    (``shield``: past that it is left to finish, not cancelled)."""

    name: str
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
    grace: float = 60.0
    shield: bool = True


async def _until_listening(
    server: EmbeddedServer, http_task: asyncio.Task[None], timeout: float = 10.0
) -> None:
    """Until the HTTP server listens, or has stopped, or ``timeout`` seconds passed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not server.started and not http_task.done():
        if asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.005)


async def serve(
    node: Node,
    http: Http,
    say: Callable[[str], None],
    *,
    label: str,
    banner: Callable[[Workspace], str],
    background: Sequence[Background],
    configure: Callable[[FastAPI], None] | None = None,
    on_stop: Sequence[Callable[[], None]] = (),
) -> None:
    """Serve ``node`` (started; closed on return) with ``background`` beside it until a
    signal stops them or one of them fails (raised). ``configure`` adds routes to the
    app; ``say`` prints a line for the user (the banner, the shutdown)."""
    import uvicorn

    from headwater.server.app import create_app
    from headwater.server.routes_webhooks import create_webhook_router, max_webhook_body_bytes

    stop = stop_on_signals()
    tasks: list[asyncio.Task[None]] = []
    server: EmbeddedServer | None = None
    http_task: asyncio.Task[None] | None = None
    app: FastAPI | None = None
    try:
        app = create_app(node, api_keys=list(http.api_keys))
        app.include_router(create_webhook_router(node.trigger_ctx))
        if configure is not None:
            configure(app)
        freeze_startup_heap()

        def hook_body_limit(ws: Workspace) -> None:
            app.state.body_limits["/hooks"] = max(max_webhook_body_bytes(ws), 1)

        hook_body_limit(node.workspace())
        node.on_reload.append(hook_body_limit)
        server = EmbeddedServer(
            uvicorn.Config(
                app,
                host=http.host,
                port=http.port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=http.graceful_shutdown,
            )
        )
        say(banner(node.workspace()))
        http_task = asyncio.create_task(server.serve(), name="http")
        # The API first: /healthz answers before recovery, claims and a consumer's flood
        # of events share the loop with it (a restart under load was "unhealthy" for as
        # long as that work took), and the background starts right after.
        await _until_listening(server, http_task)
        tasks = [asyncio.create_task(b.run(stop), name=b.name) for b in background]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            [http_task, *tasks, stopper], return_when=asyncio.FIRST_COMPLETED
        )
        stopper.cancel()
        for t in done:
            if t is not stopper and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        if http_task in done and not stop.is_set():
            raise HeadwaterError(f"the HTTP server stopped (is port {http.port} already in use?)")
    finally:
        say(f"{label}: shutting down…")
        stop.set()
        if app is not None:
            app.state.closing.set()  # the UI's live streams end instead of holding the server
        for hook in on_stop:
            hook()
        if server is not None and http.stop_first:
            server.should_exit = True
        for b, t in zip(background, tasks, strict=False):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(t) if b.shield else t, b.grace)
        if server is not None and http_task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(http_task, 10)
        await node.close()
