"""Statuses and other small enums shared by the store, the engine, the worker and the API."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Channel", "JobStatus", "LogStream", "PauseKind", "StepStatus"]


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    # An approval step waiting for a person (Strøm's name); its job holds no worker.
    SUSPENDED = "suspended"

    @property
    def is_terminal(self) -> bool:
        return self not in (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.SUSPENDED)


class PauseKind(StrEnum):
    """What ``headwater pause`` stops: a task's jobs from starting, or a trigger from
    reading its source."""

    TASK = "task"
    TRIGGER = "trigger"


class LogStream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"
    SYSTEM = "system"  # headwater's own lines about the job (warnings, retries, timeouts)


class Channel(StrEnum):
    """Wake-up channels. Payloads are hints; listeners re-read the store. Any channel may
    carry ``"*"``: something (unknown) changed, e.g. after a LISTEN reconnect."""

    # new pending jobs; payload: ONE tag signature per notification (a signature itself
    # contains commas, so several in one payload would be ambiguous)
    JOBS = "headwater_jobs"
    CANCEL = "headwater_cancel"  # payload: job id whose cancel was requested
    FINISHED = "headwater_finished"  # payload: comma-separated job ids that reached a final state
    LOGS = "headwater_logs"  # payload: job id that got new log lines
    # an outbox row was committed (sent by ``headwater.send_event``); payload: its stream
    OUTBOX = "headwater_outbox"
