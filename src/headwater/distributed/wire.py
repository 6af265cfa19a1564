"""JSON forms of the records that travel between workers and servers.

Plain dicts (``json`` encodes them), timestamps as ISO 8601 strings; the decoders accept
exactly what the encoders produce and raise ``ValueError``/``KeyError`` on anything else
(the server answers 422 for a malformed request).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from headwater.core.workflows import WorkflowStep, WorkflowStepKind
from headwater.store.base import (
    JobRecord,
    JobStatus,
    LogLine,
    LogStream,
    StepRecord,
    StepStatus,
    StepUpdate,
)

__all__ = [
    "ConsumerLease",
    "job_from_wire",
    "job_to_wire",
    "log_from_wire",
    "log_to_wire",
    "step_from_wire",
    "step_to_wire",
    "wf_step_from_wire",
    "wf_step_to_wire",
]


@dataclass(frozen=True, slots=True)
class ConsumerLease:
    """A remote worker's hold on an event-source consumer job, sent with each heartbeat."""

    trigger: str
    job_id: str
    attempt: int
    token: int


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: Any) -> datetime | None:
    if value is None:
        return None
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no UTC offset")
    return when


def _step_record_to_wire(s: StepRecord) -> dict[str, Any]:
    return {
        "name": s.name,
        "action": s.action,
        "status": s.status.value,
        "exit_code": s.exit_code,
        "output": s.output,
        "error": s.error,
        "attempts": s.attempts,
        "started_at": _ts(s.started_at),
        "finished_at": _ts(s.finished_at),
    }


def job_to_wire(job: JobRecord) -> dict[str, Any]:
    return {
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
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "created_at": _ts(job.created_at),
        "started_at": _ts(job.started_at),
        "finished_at": _ts(job.finished_at),
        "steps": [_step_record_to_wire(s) for s in job.steps],
    }


def job_from_wire(data: dict[str, Any]) -> JobRecord:
    job_id = data["id"]
    created = _dt(data["created_at"])
    assert created is not None
    return JobRecord(
        id=job_id,
        workspace=data["workspace"],
        task=data["task"],
        status=JobStatus(data["status"]),
        input=dict(data["input"]),
        output=data["output"],
        error=data["error"],
        source_type=data["source_type"],
        source_id=data["source_id"],
        dedup_key=data["dedup_key"],
        tags=frozenset(data["tags"]),
        parent_job_id=data["parent_job_id"],
        worker_id=data["worker_id"],
        attempt=int(data["attempt"]),
        max_attempts=int(data["max_attempts"]),
        cancel_requested=bool(data["cancel_requested"]),
        created_at=created,
        started_at=_dt(data["started_at"]),
        finished_at=_dt(data["finished_at"]),
        steps=tuple(
            StepRecord(
                job_id=job_id,
                name=s["name"],
                action=s["action"],
                status=StepStatus(s["status"]),
                exit_code=s["exit_code"],
                output=s["output"],
                error=s["error"],
                attempts=int(s["attempts"]),
                started_at=_dt(s["started_at"]),
                finished_at=_dt(s["finished_at"]),
            )
            for s in data["steps"]
        ),
    )


def step_to_wire(job_id: str, s: StepUpdate) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "name": s.name,
        "action": s.action,
        "status": s.status.value,
        "exit_code": s.exit_code,
        "output": s.output,
        "error": s.error,
        "attempts": s.attempts,
        "started_at": _ts(s.started_at),
        "finished_at": _ts(s.finished_at),
    }


def step_from_wire(data: dict[str, Any]) -> tuple[str, StepUpdate]:
    return str(data["job_id"]), StepUpdate(
        name=str(data["name"]),
        action=data["action"],
        status=StepStatus(data["status"]),
        exit_code=data["exit_code"],
        output=data["output"],
        error=data["error"],
        attempts=int(data["attempts"]),
        started_at=_dt(data["started_at"]),
        finished_at=_dt(data["finished_at"]),
    )


def log_to_wire(line: LogLine) -> list[Any]:
    # A list, not an object: log batches are the largest requests.
    return [line.job_id, line.step, line.stream.value, line.line, line.ts.isoformat()]


def log_from_wire(data: list[Any]) -> LogLine:
    job_id, step, stream, text, ts = data
    when = _dt(ts)
    assert when is not None
    return LogLine(str(job_id), step, LogStream(stream), str(text), when)


def wf_step_to_wire(step: WorkflowStep) -> dict[str, Any]:
    """A durable workflow's recorded call (``/worker/workflows/*``)."""
    return step.fields(_ts)


def wf_step_from_wire(data: Mapping[str, Any]) -> WorkflowStep:
    status = str(data["status"])
    if status not in ("completed", "failed"):
        raise ValueError(f"a workflow call is recorded completed or failed, not {status!r}")
    return WorkflowStep(
        seq=int(data["seq"]),
        name=str(data["name"]),
        kind=WorkflowStepKind(data["kind"]),
        status=status,
        output=data.get("output"),
        error=data.get("error"),
        attempts=int(data.get("attempts", 1)),
        started_at=_dt(data.get("started_at")),
        finished_at=_dt(data.get("finished_at")),
    )
