"""The receiver-bound functions of an application, as an embedded node (no HTTP):

    python -m headwater.sdk.receiver_node APP_SPEC

``headwater consumer run`` spawns it as one supervised unit next to the outbox
consumers; ``headwater up app.py`` runs the same workspace with the HTTP API. Each
registration is a receiver trigger whose every message becomes a job of a one-step task
that calls the function in this process (``type: function``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headwater.logging_setup import configure_logging
from headwater.sdk.consumers.heartbeat import Heartbeat
from headwater.sdk.consumers.settings import ConsumerSettings
from headwater.sdk.loading import app_root, load_registry
from headwater.sdk.registry import Registry
from headwater.workspace.models import Workspace

__all__ = ["main", "node_for", "registry_loader"]


def registry_loader(spec: str) -> tuple[Registry, Callable[[Path], Workspace]]:
    """The app's registry, and a workspace loader for ``Node`` (imports once: a reload
    returns the same workspace, since re-importing Python code is not a reload)."""
    registry = load_registry(spec)
    workspace = registry.workspace(app_root(spec))
    return registry, lambda _path: workspace


def node_for(spec: str, settings: Any) -> Any:
    """A ``Node`` serving the registrations of ``spec`` (settings: ``NodeSettings``)."""
    from headwater.node import Node

    registry, loader = registry_loader(spec)
    return Node(Path(spec), settings, loader=loader, functions=registry.functions())


async def run(spec: str, db_url: str, heartbeat: Path | None) -> None:
    from headwater.node import NodeSettings

    node = node_for(spec, NodeSettings(db_url=db_url))
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    beat = Heartbeat(heartbeat)

    async def beating() -> None:
        while not stop.is_set():
            beat.beat(force=True, state="consuming")
            await asyncio.sleep(1.0)

    tasks = [
        asyncio.create_task(node.run_worker(stop)),
        asyncio.create_task(node.run_triggers(stop, watch=False)),
        asyncio.create_task(beating()),
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await node.close()


def main(argv: list[str] | None = None) -> None:
    from headwater.sdk.consumers.supervisor import HEARTBEAT_ENV, SETTINGS_ENV

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m headwater.sdk.receiver_node APP")
    configure_logging(os.environ.get("HEADWATER_LOG_LEVEL", "info"),
                      os.environ.get("HEADWATER_LOG_FORMAT", "console"))  # fmt: skip
    settings = ConsumerSettings.from_json(os.environ[SETTINGS_ENV])
    heartbeat = os.environ.get(HEARTBEAT_ENV)
    asyncio.run(run(args[0], settings.db_url, Path(heartbeat) if heartbeat else None))


if __name__ == "__main__":
    main()
