"""``headwater up``: one node with the API, every trigger and a worker in one process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from headwater.app.serve import Background, Http, serve
from headwater.node import Node, NodeSettings
from headwater.store.retention import RetentionPolicy
from headwater.url_secrets import hide_password
from headwater.worker.worker import WorkerSettings
from headwater.workspace.models import Workspace
from headwater.workspace.tag_checks import unserved_steps

__all__ = ["UpSettings", "build_node", "run_up"]


@dataclass(frozen=True, slots=True)
class UpSettings:
    path: Path  # a workspace (YAML file or directory) or a Python app (app.py)
    db_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    concurrency: int = 8
    api_keys: tuple[str, ...] = ()
    retention: RetentionPolicy | None = None
    artifacts_dir: Path | None = None
    worker_tags: frozenset[str] = frozenset()  # beyond the runners' (`up --tags`)


def build_node(path: Path, settings: NodeSettings) -> Node:
    """The node of a workspace, or of a Python app's receiver-bound functions."""
    if path.suffix == ".py":
        from headwater.sdk.receiver_node import node_for

        node: Node = node_for(str(path), settings)
        return node
    return Node(path, settings)


async def run_up(s: UpSettings, say: Callable[[str], None]) -> None:
    from headwater.server.auth import require_api_key_for

    require_api_key_for(s.host, list(s.api_keys))
    settings = NodeSettings(
        db_url=s.db_url,
        worker=WorkerSettings(concurrency=s.concurrency),
        retention=s.retention,
        artifacts_dir=s.artifacts_dir,
        worker_tags=s.worker_tags,
    )
    node = build_node(s.path, settings)
    watch = s.path.suffix != ".py"  # a Python app is not reloaded from disk
    await node.start()

    async def triggers(stop: asyncio.Event) -> None:
        await node.run_triggers(stop, watch=watch)

    def banner(ws: Workspace) -> str:
        # Steps this worker's tags cannot run: their jobs would wait, so say it now.
        notes = [f"\nnote: {u.describe()}" for u in unserved_steps(ws, s.worker_tags)]
        return (
            f"headwater up: workspace [bold]{ws.name}[/bold] ({len(ws.tasks)} tasks, "
            f"{len(ws.triggers)} triggers) · API http://{s.host}:{s.port} · "
            f"db {hide_password(s.db_url)}" + "".join(notes)
        )

    await serve(
        node,
        Http(s.host, s.port, s.api_keys),
        say,
        label="headwater",
        banner=banner,
        background=[
            Background("triggers", triggers, grace=10, shield=False),
            Background("worker", node.run_worker, grace=60),
        ],
    )
