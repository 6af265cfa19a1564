"""The JSON form of a durable workflow's recorded call, between a remote worker and the
servers (``/worker/workflows/*``). Timestamps are ISO 8601 with their UTC offset; the
decoder raises ``ValueError``/``KeyError`` on anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from headwater.core.workflows import WorkflowStep, WorkflowStepKind

__all__ = ["wf_step_from_wire", "wf_step_to_wire"]


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: Any) -> datetime | None:
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if when.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no UTC offset")
    return when


def wf_step_to_wire(step: WorkflowStep) -> dict[str, Any]:
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
