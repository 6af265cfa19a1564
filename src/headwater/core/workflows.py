"""The records of durable Python workflows (``headwater.sdk.workflows``), as stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "FINISHED_KEY",
    "TIMED_OUT",
    "WorkflowStart",
    "WorkflowStep",
    "WorkflowStepKind",
    "WorkflowWait",
]


class WorkflowStepKind(StrEnum):
    """What a recorded call of a workflow was; a replay checks it with the name."""

    STEP = "step"
    TRANSACTION = "transaction"
    SLEEP = "sleep"
    RECV = "recv"
    SEND = "send"
    CHILD = "child"  # a child workflow started (output: its workflow id)
    SET_EVENT = "set_event"
    GET_EVENT = "get_event"
    RESULT = "result"  # a child workflow's result, once it ended


# A wait on ``event_key`` FINISHED_KEY of a job: its end (a child workflow's result).
FINISHED_KEY = "*finished"
# The error of a wait recorded as timed out (recv and get_event return None then).
TIMED_OUT = "timed out"


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """One call of a workflow, recorded when it completed (``status`` ``completed`` with
    its ``output``) or failed for good (``failed`` with ``error``)."""

    seq: int
    name: str
    kind: WorkflowStepKind
    status: str
    output: Any = None
    error: str | None = None
    attempts: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def fields(self, timestamp: Callable[[datetime | None], Any]) -> dict[str, Any]:
        """Every field by name, the two times through ``timestamp``: the API, the worker
        wire and the store each write times their own way."""
        return {
            "seq": self.seq,
            "name": self.name,
            "kind": self.kind.value,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "attempts": self.attempts,
            "started_at": timestamp(self.started_at),
            "finished_at": timestamp(self.finished_at),
        }


@dataclass(frozen=True, slots=True)
class WorkflowWait:
    """What a workflow waits for while no worker holds it: a time (``wake_at``), a
    message on ``topic`` or the event ``event_key`` of job ``event_job_id`` (each with
    ``wake_at`` as its timeout, None: no timeout)."""

    job_id: str
    wake_at: datetime | None
    topic: str | None = None
    event_job_id: str | None = None
    event_key: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowStart:
    """A workflow run to start: a job of ``task`` whose dedup key is ``workflow_id``."""

    task: str
    input: Mapping[str, Any]
    workflow_id: str
    parent_job_id: str | None = None
    max_attempts: int | None = None  # claims before recovery fails it (None: the default)
