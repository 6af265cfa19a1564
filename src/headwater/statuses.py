"""The statuses of jobs and steps and the streams of log lines: the store's words, in a
module that imports nothing, so the command line can name them without loading the store
(``headwater.store.base`` re-exports them)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["JobStatus", "LogStream", "StepStatus"]


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


class LogStream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"
    SYSTEM = "system"  # headwater's own lines about the job (warnings, retries, timeouts)
