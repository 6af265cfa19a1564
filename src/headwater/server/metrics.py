"""Prometheus metrics of one app instance.

Each ``Metrics`` owns its own ``CollectorRegistry``: no series lives in the global
default registry, so two apps in one process (tests, an embedded server next to a
worker) never collide or double count. Other components (the engine, the triggers)
register their series through ``Metrics.counter``/``gauge``/``histogram`` and refresh
store-derived values at scrape time through ``Metrics.on_scrape``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headwater.store.base import FlowStore, JobStatus, JobStore, UpkeepStore
from headwater.telemetry.job_metrics import JobMetrics

__all__ = [
    "LIVE_STATUSES",
    "Metrics",
    "RequestMetricsMiddleware",
    "job_status_refresher",
    "paused_refresher",
    "store_size_refresher",
    "trigger_state_refresher",
]

log = structlog.get_logger(__name__)

Refresher = Callable[[], Awaitable[None]]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """A registry plus the series the HTTP API maintains itself."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, namespace: str = "headwater") -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry(auto_describe=True)
        self._refreshers: list[Refresher] = []
        self.api_requests = self.counter(
            "api_requests",
            "HTTP requests answered, by method, route and status",
            ("method", "route", "status"),
        )
        self.api_request_seconds = self.histogram(
            "api_request_seconds",
            "Time to the first response byte, by method and route",
            ("method", "route"),
            buckets=_LATENCY_BUCKETS,
        )
        self.jobs = self.gauge(
            "jobs",
            "Jobs in the store, by status: pending and running read at each scrape, the "
            "finished ones at most every 30 s",
            ("status",),
        )
        self.refresh_errors = self.counter(
            "metrics_refresh_errors", "Scrape-time refreshes that failed (the store was down?)"
        )

    # -- registering series ----------------------------------------------------------
    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """A counter named ``<namespace>_<name>_total`` on this app's registry."""
        return Counter(
            name, documentation, labelnames, namespace=self.namespace, registry=self.registry
        )

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        return Gauge(
            name, documentation, labelnames, namespace=self.namespace, registry=self.registry
        )

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        return Histogram(
            name,
            documentation,
            labelnames,
            namespace=self.namespace,
            registry=self.registry,
            buckets=buckets,
        )

    def include(self, collectors: JobMetrics) -> None:
        """Expose series created elsewhere (a node's ``JobMetrics``) on this registry."""
        collectors.register(self.registry)

    def on_scrape(self, refresh: Refresher) -> None:
        """Run ``refresh`` before each scrape (to set gauges read from the store)."""
        self._refreshers.append(refresh)

    # -- scraping --------------------------------------------------------------------
    async def render(self) -> bytes:
        """The Prometheus text exposition, after running every refresher.

        A failing refresher is counted and logged, not raised: a scrape during a store
        outage still returns the process's own series (and the error counter says why
        the store-derived ones are stale).
        """
        for refresh in self._refreshers:
            try:
                await refresh()
            except Exception as exc:
                self.refresh_errors.inc()
                log.warning("metrics_refresh_failed", error=type(exc).__name__)
        return generate_latest(self.registry)


LIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)


def job_status_refresher(
    metrics: Metrics, store: JobStore, finished_every: float = 30.0
) -> Refresher:
    """Sets ``headwater_jobs{status=...}`` from ``store.count_jobs_by_status()``. The
    queue's gauges (pending, running) are exact at every scrape and cost an index
    range; counting the finished jobs reads their whole index (73 ms on SQLite, 160 ms
    on PostgreSQL at 1,000,000 jobs), so it runs at most every ``finished_every``
    seconds."""
    last_full = [float("-inf")]

    async def refresh() -> None:
        now = time.monotonic()
        full = now - last_full[0] >= finished_every
        counts = await store.count_jobs_by_status(None if full else LIVE_STATUSES)
        if full:
            last_full[0] = now
        # Every status counted gets a value (0 when absent) so a status whose jobs all
        # moved on drops to 0 instead of keeping its last count.
        for status in JobStatus if full else LIVE_STATUSES:
            metrics.jobs.labels(status=status.value).set(counts.get(status.value, 0))

    return refresh


def store_size_refresher(metrics: Metrics, store: UpkeepStore, every: float = 30.0) -> Refresher:
    """Sets ``headwater_store_rows{table}`` and ``headwater_store_bytes``, read at most
    every ``every`` seconds (counting rows of a large SQLite table is a scan)."""
    rows = metrics.gauge(
        "store_rows",
        "Rows per table (exact on SQLite, the planner's estimate on PostgreSQL)",
        ("table",),
    )
    size = metrics.gauge(
        "store_bytes",
        "Database size in bytes (SQLite page_count*page_size, PostgreSQL pg_database_size)",
    )
    last = [float("-inf")]

    async def refresh() -> None:
        now = time.monotonic()
        if now - last[0] < every:
            return
        found = await store.store_size()
        last[0] = now
        for table, count in found.rows.items():
            rows.labels(table=table).set(count)
        if found.bytes is not None:
            size.set(found.bytes)

    return refresh


def paused_refresher(metrics: Metrics, store: FlowStore) -> Refresher:
    """Sets ``headwater_paused{kind, name}`` to 1 for each paused task and trigger
    (``headwater pause``); a resumed one loses its series."""
    paused = metrics.gauge("paused", "1 while a task or trigger is paused", ("kind", "name"))

    async def refresh() -> None:
        found = await store.list_paused()
        paused.clear()
        for record in found:
            paused.labels(kind=record.kind.value, name=record.name).set(1)

    return refresh


# Per-trigger numbers a trigger state may carry, exported as gauges of the same name.
_TRIGGER_GAUGES = {
    "lag_events": "Messages not yet acknowledged by a receiver (undelivered + pending)",
    "lag_pending": "Messages a receiver has read but not yet acknowledged",
    "lag_ms": "Age in milliseconds of a receiver's oldest unacknowledged message",
    "lag_bytes": "Bytes of its source's log after a receiver's checkpoint (CDC WAL, binlog)",
    "in_flight": "Jobs of the trigger that are pending or running",
    "events_accepted": "Events of the trigger that became jobs",
    "events_rejected": "Events of the trigger stored as dead letters",
    "buffered": "Events of a debounce/batch trigger waiting in its buffers for their job",
}


def trigger_state_refresher(
    metrics: Metrics, states: Callable[[], Awaitable[Mapping[str, Mapping[str, Any]]]]
) -> Refresher:
    """Sets ``headwater_trigger_<number>{trigger, type}`` from the triggers' live state.

    A trigger that no longer reports a number (removed, lag unknown) loses its series
    rather than keeping a stale value."""
    gauges = {
        key: metrics.gauge(f"trigger_{key}", doc, ("trigger", "type"))
        for key, doc in _TRIGGER_GAUGES.items()
    }

    async def refresh() -> None:
        current = await states()
        for gauge in gauges.values():
            gauge.clear()
        for name, state in current.items():
            kind = str(state.get("type") or "")
            for key, gauge in gauges.items():
                value = state.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    gauge.labels(trigger=name, type=kind).set(value)

    return refresh


class RequestMetricsMiddleware:
    """Counts every HTTP response by route template (not raw path: ids in paths would
    make one series per job) and observes the time to the response start."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = str(scope.get("method", "GET"))

        started_response = False

        def count(status: int) -> None:
            route = _route_template(scope)
            self.metrics.api_requests.labels(method, route, str(status)).inc()
            self.metrics.api_request_seconds.labels(method, route).observe(
                time.perf_counter() - started
            )

        async def send_and_count(message: Message) -> None:
            nonlocal started_response
            if message["type"] == "http.response.start":
                started_response = True
                count(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        except Exception:
            # An unhandled error is answered 500 by Starlette's outermost middleware,
            # outside this one: count it here, or /metrics would never show a 500.
            if not started_response:
                count(500)
            raise


_CONVERTER = re.compile(r"\{(\w+):\w+\}")


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "<unmatched>"
    # `{task:path}` (a task name may hold a `/`) is still the route `{task}` to a dashboard.
    return _CONVERTER.sub(r"{\1}", path)
