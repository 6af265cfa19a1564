"""``headwater worker``: a remote worker claiming jobs from servers over HTTP."""

from __future__ import annotations

from collections.abc import Callable

from headwater.app.signals import stop_on_signals
from headwater.node import freeze_startup_heap
from headwater.worker.remote import RemoteWorker, RemoteWorkerSettings

__all__ = ["run_remote_worker"]


async def run_remote_worker(settings: RemoteWorkerSettings, say: Callable[[str], None]) -> None:
    """Run until SIGINT/SIGTERM; ``say`` prints the start line."""
    stop = stop_on_signals()
    offered = settings.tags
    shown_tags = ", ".join(sorted(offered)) if offered else "those of its runners"
    shown = f"servers {', '.join(settings.servers)} · tags {shown_tags}"
    say(f"headwater worker: {shown} · concurrency {settings.worker.concurrency}")
    freeze_startup_heap()  # what is loaded by now lives as long as the process
    await RemoteWorker(settings).run(stop)
