"""Optional OpenTelemetry traces: one trace per job, its id derived from the job id.

A job id is a UUIDv7: its 128 bits are the job's trace id, so every process that
touches the job (the server that dispatches it, the worker that claims it, a remote
worker) puts its spans into the same trace with nothing stored and nothing sent along.
The spans: ``dispatch`` (the event became the job), ``job`` (claim to result) and
``step:<name>`` per step that ran, children of ``job``. All are children of a root
span id derived from the job id too (never exported itself).

Off unless ``HEADWATER_OTEL=1`` or an ``OTEL_*`` tracing variable is set; then the
OpenTelemetry SDK (the ``otel`` extra) is imported, lazily: without it nothing changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from headwater.core.trace import trace_id_of  # re-exported: callers know it from here

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["Tracing", "otel_enabled", "trace_id_of", "tracing_from_env"]

# Variables that say the user set up OpenTelemetry (exporter, endpoint, service name).
_OTEL_VARS = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
              "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME")  # fmt: skip


def otel_enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get("HEADWATER_OTEL", "").lower() in ("1", "true", "yes", "on"):
        return True
    return any(env.get(name) for name in _OTEL_VARS)


def tracing_from_env(env: Mapping[str, str] | None = None) -> Tracing | None:
    """A ``Tracing`` over an SDK provider when enabled and installed, else None."""
    if not otel_enabled(env):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        _log().warning("otel_unavailable", hint="pip install 'headwater[otel]'")
        return None
    env = os.environ if env is None else env
    provider = SdkTracerProvider(
        resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "headwater")})
    )
    exporter: Any = None
    if env.get("OTEL_TRACES_EXPORTER", "otlp") != "console":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter()
        except ImportError:
            _log().warning("otel_otlp_exporter_missing", fallback="console")
    provider.add_span_processor(BatchSpanProcessor(exporter or ConsoleSpanExporter()))
    return Tracing(provider)


def _log() -> Any:
    import structlog  # here: ``trace_id_of`` is imported by light modules (the CLI's)

    return structlog.get_logger(__name__)


def _ns(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1e9)


class Tracing:
    """Starts the spans of jobs on a ``TracerProvider`` (the caller's: no global)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("headwater")

    def _root(self, job_id: str) -> Context | None:
        from opentelemetry import trace

        trace_id = trace_id_of(job_id)
        if trace_id is None:
            return None
        value = int(trace_id, 16)
        span_id = (value & 0xFFFF_FFFF_FFFF_FFFF) or 1
        root = trace.SpanContext(
            trace_id=value,
            span_id=span_id,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(root))

    def dispatch(
        self, job_id: str, task: str, source_type: str, source_id: str | None, start_ns: int
    ) -> None:
        """The ``dispatch`` span of a job just created (from ``start_ns`` to now)."""
        context = self._root(job_id)
        if context is None:
            return
        span = self.tracer.start_span(
            "dispatch",
            context=context,
            start_time=start_ns,
            attributes={
                "headwater.job_id": job_id,
                "headwater.task": task,
                "headwater.source_type": source_type,
                "headwater.source_id": source_id or "",
            },
        )
        span.end()

    def job(self, job_id: str, task: str, attempt: int) -> Span | None:
        """The ``job`` span, started at the claim; the caller ends it."""
        context = self._root(job_id)
        if context is None:
            return None
        return self.tracer.start_span(
            "job",
            context=context,
            attributes={
                "headwater.job_id": job_id,
                "headwater.task": task,
                "headwater.attempt": attempt,
            },
        )

    def step(
        self,
        job_span: Span,
        name: str,
        status: str,
        started_at: datetime | None,
        finished_at: datetime | None,
        error: str | None = None,
    ) -> None:
        """A ``step:<name>`` span, child of ``job_span``, from the step's own times."""
        from opentelemetry import trace

        start = _ns(started_at)
        if start is None:
            return  # never ran (skipped, not started)
        span = self.tracer.start_span(
            f"step:{name}",
            context=trace.set_span_in_context(job_span),
            start_time=start,
            attributes={"headwater.step": name, "headwater.status": status},
        )
        if error:
            span.set_status(trace.Status(trace.StatusCode.ERROR, error[:200]))
        span.end(end_time=_ns(finished_at))

    @staticmethod
    def end_job(span: Span, status: str, error: str | None) -> None:
        from opentelemetry import trace

        span.set_attribute("headwater.status", status)
        if error:
            span.set_status(trace.Status(trace.StatusCode.ERROR, error[:200]))
        span.end()
