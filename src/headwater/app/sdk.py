"""``headwater consumer run`` and ``headwater publisher run``: the SDK's processes, wired
with their store, Redis, metrics and signals."""

from __future__ import annotations

import asyncio

from headwater.app.signals import stop_on_signals
from headwater.errors import HeadwaterError
from headwater.sdk.consumers.settings import SupervisorSettings
from headwater.sdk.publisher import PublisherSettings

__all__ = ["run_consumers", "run_publisher"]


async def run_consumers(spec: str, settings: SupervisorSettings) -> None:
    """Every registered consumer of the app ``spec``, supervised, until SIGINT/SIGTERM."""
    from headwater.sdk.consumers.supervisor import Supervisor
    from headwater.sdk.loading import load_registry
    from headwater.sdk.metrics import PipelineMetrics
    from headwater.sdk.redis_util import connect
    from headwater.store.sql import open_store

    registry = load_registry(spec)
    registry.log_registered_endpoints()
    store = await open_store(settings.worker.db_url)
    redis = connect(settings.worker.redis_url)
    metrics = PipelineMetrics()
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    stop = stop_on_signals()
    try:
        supervisor = Supervisor(spec, registry, settings, store=store, redis=redis, metrics=metrics)
        if not supervisor.units:
            raise HeadwaterError(f"{spec!r} has no registration to run (see --only)")
        await supervisor.run(stop)
    finally:
        await redis.aclose()
        await store.close()


async def run_publisher(settings: PublisherSettings, metrics_port: int | None) -> None:
    """The outbox publisher until SIGINT/SIGTERM (a standby while another holds the lease)."""
    from headwater.sdk.metrics import PipelineMetrics
    from headwater.sdk.publisher import Publisher
    from headwater.sdk.redis_util import connect
    from headwater.store.sql import open_store

    store = await open_store(settings.db_url)
    redis = connect(settings.redis_url)
    stop = stop_on_signals()
    publisher = Publisher(settings, store=store, redis=redis)
    metrics = PipelineMetrics()
    reporter: asyncio.Task[None] | None = None
    if metrics_port is not None:
        metrics.serve(metrics_port)

        async def report() -> None:
            seen = (0, 0)
            while not stop.is_set():
                count, age = await publisher.backlog()
                metrics.outbox_backlog.set(count)
                metrics.outbox_backlog_ms.set(age)
                stats = publisher.stats
                metrics.published.inc(stats.published - seen[0])
                metrics.recoveries.inc(stats.recoveries - seen[1])
                seen = (stats.published, stats.recoveries)
                await asyncio.sleep(5)

        reporter = asyncio.create_task(report())
    try:
        await publisher.run(stop)
    finally:
        if reporter is not None:
            reporter.cancel()
        await redis.aclose()
        await store.close()
