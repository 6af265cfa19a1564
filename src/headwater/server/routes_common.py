"""What every route module shares: the response models (the OpenAPI schema of the job
JSON), the error body, and the dependency that hands a route the runtime.

The models document and check the JSON that ``server.json_shapes`` (``job_json`` and friends) build;
they allow extra fields so that a field the store adds later reaches clients before the
model learns about it instead of being silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from headwater.server.runtime import Runtime

__all__ = [
    "ERRORS_404",
    "ERRORS_409",
    "ERRORS_422",
    "ErrorBody",
    "ErrorOut",
    "JobListOut",
    "JobOut",
    "JobSummaryOut",
    "LogOut",
    "LogsOut",
    "RuntimeDep",
    "StepOut",
    "WorkerOut",
    "WorkflowStepOut",
    "aware_utc",
    "error_response",
    "get_runtime",
    "iso_z",
]

JobStatusName = Literal["pending", "running", "completed", "failed", "cancelled"]
StepStatusName = Literal[
    "pending", "running", "completed", "failed", "skipped", "cancelled", "suspended"
]
# Timestamps stay the strings ``json_shapes`` produced (ISO 8601, UTC, ``Z``): re-parsing
# them into datetimes would only risk a different spelling on the way out.
Timestamp = Annotated[str | None, Field(json_schema_extra={"format": "date-time"})]


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class StepOut(_Out):
    name: str
    action: str | None = None
    status: StepStatusName
    exit_code: int | None = None
    output: Any = None
    error: str | None = None
    attempts: int = 0
    started_at: Timestamp = None
    finished_at: Timestamp = None
    timeout_at: Timestamp = Field(
        None, description="A suspended approval step fails at this time if undecided."
    )


class JobSummaryOut(_Out):
    """The job JSON of DESIGN.md as lists show it: without ``steps``."""

    id: str
    workspace: str
    task: str
    status: JobStatusName
    input: dict[str, Any]
    output: Any = None
    error: str | None = None
    source_type: str
    source_id: str | None = None
    dedup_key: str | None = None
    parent_job_id: str | None = None
    worker_id: str | None = None
    attempt: int = 0
    cancel_requested: bool = False
    suspended: bool = Field(
        False, description="Waiting for an approval: running, but no worker holds it."
    )
    retry_of_job_id: str | None = Field(
        None, description="For a task retry (``source_type: retry``): the failed attempt."
    )
    retry_job_id: str | None = Field(
        None, description="One job's answer only: the task retry that followed this job."
    )
    created_at: Timestamp
    started_at: Timestamp = None
    finished_at: Timestamp = None
    trace_id: str | None = Field(
        None, description="The job's OpenTelemetry trace id (its UUID's 32 hex digits)"
    )


class WorkflowStepOut(_Out):
    """One recorded call of a durable workflow (``headwater.sdk.workflows``)."""

    seq: int
    name: str
    kind: str
    status: str
    output: Any = None
    error: str | None = None
    attempts: int = 1
    started_at: Timestamp = None
    finished_at: Timestamp = None


class JobOut(JobSummaryOut):
    """The job JSON of DESIGN.md with its steps (single-job responses)."""

    steps: list[StepOut]
    workflow_steps: list[WorkflowStepOut] | None = Field(
        None, description="A workflow run's recorded calls, in call order (else absent)."
    )


class JobListOut(BaseModel):
    jobs: list[JobSummaryOut]
    next_before: str | None = Field(
        description="Pass as ``before`` to get the next (older) page; null on the last page."
    )


class WorkerOut(BaseModel):
    """A registered worker (its token is never shown)."""

    id: str
    name: str
    tags: list[str]
    started_at: Timestamp
    last_heartbeat: Timestamp
    live: bool = Field(description="Whether it heartbeated in the last 30 seconds.")
    running_jobs: list[str] = Field(description="Ids of the jobs it runs now.")


class LogOut(_Out):
    seq: int
    step: str | None = None
    stream: Literal["stdout", "stderr", "system"]
    line: str
    ts: Timestamp


class LogsOut(BaseModel):
    logs: list[LogOut]
    last_seq: int = Field(description="Pass as ``after`` to get the lines that follow.")
    job_status: JobStatusName


class ErrorBody(BaseModel):
    type: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorBody


# Documented error responses, reused by the route decorators.
ERRORS_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}
ERRORS_409: dict[int | str, dict[str, Any]] = {409: {"model": ErrorOut}}
ERRORS_422: dict[int | str, dict[str, Any]] = {422: {"model": ErrorOut}}


def error_response(
    status_code: int,
    type_: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one error shape: ``{"error": {"type", "message", "details"}}``."""
    body = {"error": {"type": type_, "message": message, "details": details}}
    return JSONResponse(body, status_code=status_code, headers=headers)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def aware_utc(value: datetime | None, where: Literal["query", "body"]) -> datetime | None:
    """In UTC; a time without an offset is UTC (the store refuses naive datetimes).
    ``where``: the part of the request it came from, for the 422."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise RequestValidationError(
            [{"loc": (where,), "msg": "time out of range", "type": "value_error"}]
        ) from None


def iso_z(value: datetime) -> str:
    """ISO 8601 with ``Z`` for UTC, as the API writes every time."""
    return value.isoformat().replace("+00:00", "Z")
