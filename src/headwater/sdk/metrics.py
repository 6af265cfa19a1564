"""Prometheus series of the consumer supervisor and the publisher (their own registry,
served on ``--metrics-port``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = ["PipelineMetrics"]

_LABELS = ("stream_name", "consumer_name")


class PipelineMetrics:
    def __init__(self, namespace: str = "headwater") -> None:
        self.registry = CollectorRegistry(auto_describe=True)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, namespace=namespace, registry=self.registry)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=self.registry)

        self.lag_ms = gauge(
            "consumer_lag_ms",
            "Age in ms of the next unconsumed event past the checkpoint, from its creation"
            " time (0: caught up)",
            _LABELS,
        )
        self.lag_events = gauge(
            "consumer_lag_events_count", "Events in the stream past the checkpoint", _LABELS
        )
        self.events_processed = gauge(
            "consumer_events_processed", "Events the consumer applied (checkpoint)", _LABELS
        )
        self.worker_up = gauge(
            "consumer_worker_up", "1 while the consumer's worker process runs", _LABELS
        )
        self.restarts = counter(
            "supervisor_worker_restarts", "Worker processes that died and were respawned",
            ("consumer_name",),
        )  # fmt: skip
        self.quarantined_total = counter(
            "supervisor_worker_quarantined", "Times a consumer tipped into quarantine",
            ("consumer_name",),
        )  # fmt: skip
        self.quarantined = gauge(
            "supervisor_workers_quarantined", "Consumers currently quarantined"
        )
        self.outbox_backlog = gauge("outbox_backlog", "Outbox rows not published yet")
        self.outbox_backlog_ms = gauge(
            "outbox_backlog_ms", "Age in ms of the oldest outbox row not published yet"
        )
        self.published = counter("outbox_published", "Outbox rows published to Redis")
        self.recoveries = counter(
            "outbox_recoveries", "Times Redis was found to have lost data and was refilled"
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """``/metrics`` on ``host:port`` from a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
