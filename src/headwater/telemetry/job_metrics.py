"""Prometheus series of jobs and events, observed where they happen in this process.

A ``JobMetrics`` creates its collectors unregistered; each HTTP app registers them on
its own registry (``Metrics.include``), so no series lives in a global registry and two
nodes in one process never share a count. What a process exposes is what it observes:
the server of a distributed cluster sees every claim and finish (they arrive through
``/worker/sync``); an embedded node sees its own worker's.

Labels stay bounded: ``task`` and ``trigger`` are names of the workspace, ``status`` and
``outcome`` are enums; a job id is never a label.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram

from headwater.core.records import JobRecord

__all__ = ["UNTRIGGERED_SOURCES", "JobMetrics", "trigger_label"]

# Seconds: from a few milliseconds of queue wait to hours of a long job.
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)

# Sources whose ``source_id`` is no trigger name (a child's is its parent's job id):
# their events count under ``trigger=""``.
UNTRIGGERED_SOURCES = frozenset({"api", "cli", "task", "hook", "replay"})


def trigger_label(source_type: str, source_id: str | None) -> str:
    if source_type in UNTRIGGERED_SOURCES or source_id is None:
        return ""
    return source_id


class JobMetrics:
    def __init__(self, namespace: str = "headwater") -> None:
        def counter(name: str, doc: str, labels: Sequence[str]) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=None)

        def histogram(name: str, doc: str, labels: Sequence[str]) -> Histogram:
            return Histogram(
                name, doc, labels, namespace=namespace, registry=None, buckets=_DURATION_BUCKETS
            )

        self.job_duration = histogram(
            "job_duration_seconds", "Jobs finished, started to finished, by task", ("task",)
        )
        self.job_queue_wait = histogram(
            "job_queue_wait_seconds", "Jobs claimed, created to started, by task", ("task",)
        )
        self.jobs_finished = counter(
            "jobs_finished", "Jobs that reached a final status, by task and status",
            ("task", "status"),
        )  # fmt: skip
        self.events = counter(
            "events",
            "Events dispatched, by source type, trigger and outcome (accepted, duplicate, "
            "rejected)",
            ("source_type", "trigger", "outcome"),
        )
        self.receiver_errors = counter(
            "receiver_errors", "Receiver failures (connection lost, bad message), by trigger",
            ("trigger",),
        )  # fmt: skip
        self.store_errors = counter(
            "store_errors", "Store operations that failed, by operation", ("operation",)
        )
        self._collectors = (
            self.job_duration,
            self.job_queue_wait,
            self.jobs_finished,
            self.events,
            self.receiver_errors,
            self.store_errors,
        )

    def register(self, registry: CollectorRegistry) -> None:
        for collector in self._collectors:
            registry.register(collector)

    # -- observations ----------------------------------------------------------------
    def claimed(self, jobs: Iterable[JobRecord]) -> None:
        """Queue wait of jobs just claimed (their ``started_at`` is set by the claim)."""
        for job in jobs:
            if job.started_at is not None and job.attempt <= 1:
                wait = (job.started_at - job.created_at).total_seconds()
                self.job_queue_wait.labels(task=job.task).observe(max(wait, 0.0))

    def finished(self, job: JobRecord, status: str, at: datetime | None = None) -> None:
        """A job that reached ``status``: its duration and the finished counter."""
        self.jobs_finished.labels(task=job.task, status=status).inc()
        if job.started_at is not None:
            end = job.finished_at or at or datetime.now(UTC)
            self.job_duration.labels(task=job.task).observe(
                max((end - job.started_at).total_seconds(), 0.0)
            )

    def event(self, source_type: str, source_id: str | None, outcome: str, n: int = 1) -> None:
        self.events.labels(
            source_type=source_type, trigger=trigger_label(source_type, source_id), outcome=outcome
        ).inc(n)

    def receiver_error(self, trigger: str) -> None:
        self.receiver_errors.labels(trigger=trigger).inc()

    def store_error(self, operation: str) -> None:
        self.store_errors.labels(operation=operation).inc()
