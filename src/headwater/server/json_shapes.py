"""The JSON the HTTP API (and the CLI's ``--json``) shows for the store's records.

The records in ``core.records`` are storage shapes; how a job, step, log line, rejected
event or worker token looks on the wire is the API's concern, so it lives here. Keys are
snake_case (DESIGN.md) and timestamps ISO 8601 UTC with a ``Z``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from headwater.core.records import (
    JobRecord,
    LogRecord,
    RejectedEvent,
    StepRecord,
    WorkerTokenRecord,
)
from headwater.core.trace import trace_id_of
from headwater.core.workflows import WorkflowStep

__all__ = [
    "iso",
    "job_json",
    "log_json",
    "rejected_json",
    "step_json",
    "worker_token_json",
    "workflow_step_json",
]


def iso(value: datetime | None) -> str | None:
    """A UTC timestamp as the API writes it: ISO 8601 with ``Z`` (None stays None)."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def step_json(step: StepRecord) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": step.name,
        "action": step.action,
        "status": step.status.value,
        "exit_code": step.exit_code,
        "output": step.output,
        "error": step.error,
        "attempts": step.attempts,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
    }
    if step.timeout_at is not None:
        data["timeout_at"] = iso(step.timeout_at)
    return data


def job_json(job: JobRecord, include_steps: bool = True) -> dict[str, Any]:
    """The job JSON of DESIGN.md (snake_case)."""
    data: dict[str, Any] = {
        "id": job.id,
        "workspace": job.workspace,
        "task": job.task,
        "status": job.status.value,
        "input": job.input,
        "output": job.output,
        "error": job.error,
        "source_type": job.source_type,
        "source_id": job.source_id,
        "dedup_key": job.dedup_key,
        "tags": sorted(job.tags),
        "parent_job_id": job.parent_job_id,
        "worker_id": job.worker_id,
        "attempt": job.attempt,
        "cancel_requested": job.cancel_requested,
        "suspended": job.suspended,
        # A task retry's previous attempt (Strøm's retry_of_job_id).
        "retry_of_job_id": job.source_id if job.source_type == "retry" else None,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        # The job's OpenTelemetry trace id: derived from its UUIDv7 id, never stored.
        "trace_id": trace_id_of(job.id),
    }
    if include_steps:
        data["steps"] = [step_json(s) for s in job.steps]
    return data


def workflow_step_json(step: WorkflowStep) -> dict[str, Any]:
    return step.fields(iso)


def log_json(rec: LogRecord) -> dict[str, Any]:
    return {
        "seq": rec.seq,
        "step": rec.step,
        "stream": rec.stream.value,
        "line": rec.line,
        "ts": iso(rec.ts),
    }


def rejected_json(event: RejectedEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "source_type": event.source_type,
        "source_id": event.source_id,
        "target_task": event.target_task,
        "payload": event.payload,
        "reason": event.reason,
        "dedup_key": event.dedup_key,
        "created_at": iso(event.created_at),
        "replayed_at": iso(event.replayed_at),
        "replay_job_id": event.replay_job_id,
    }


def worker_token_json(token: WorkerTokenRecord) -> dict[str, Any]:
    """Everything but the hash."""
    return {
        "id": token.id,
        "name": token.name,
        "created_at": iso(token.created_at),
        "revoked_at": iso(token.revoked_at),
        "last_used_at": iso(token.last_used_at),
    }
