"""Strøm's task-level ``retry``: a failed job starts a new job of its task.

Rules (Strøm's):
- only a failed job retries (not a cancelled one), only a top-level job (a sub-job of a
  ``type: task`` step is its parent's business) and never a hook job;
- the new job has the same task and input, ``source_type: retry`` and ``source_id``
  the failed job (so the chain is followed back from any attempt; the API also shows
  the job that retried a failed one);
- ``max_attempts`` of Strøm's form is the number of retries, as for a step's retry
  (Strøm's engine compares the retries done with it); headwater's form says ``count``;
- retry n waits ``delay`` (``exponential``: doubling, at most 64 × ``delay``; plus up to
  25 % with ``jitter``) before its first step. The wait is part of the new job (it runs
  from the job's creation time), so a restart of the worker does not lose it;
- hooks fire only for the last attempt: a failed job that is retried fires none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from headwater.store.base import JobRecord, JobStatus
from headwater.workspace.models import RetryPolicy, Workspace

__all__ = ["MAX_CHAIN", "RETRY_SOURCE", "retry_attempt", "retry_delay", "retry_policy"]

RETRY_SOURCE = "retry"
MAX_CHAIN = 101  # retries are at most 100: a longer chain is not ours


def retry_policy(ws: Workspace, job: JobRecord) -> RetryPolicy | None:
    """The task retry ``job`` may use, if it is a job that retries at all."""
    task = ws.tasks.get(job.task)
    if task is None or task.retry is None or task.retry.count == 0:
        return None
    if job.parent_job_id is not None or job.source_type == "hook":
        return None
    return task.retry


async def retry_attempt(
    get_job: Callable[[str], Awaitable[JobRecord | None]], job: JobRecord
) -> int:
    """Which retry ``job`` is: 0 for the first job, n for the n-th retry."""
    n, current = 0, job
    while current.source_type == RETRY_SOURCE and current.source_id and n < MAX_CHAIN:
        previous = await get_job(current.source_id)
        n += 1
        if previous is None:  # pruned: count what is known
            break
        current = previous
    return n


def retry_delay(policy: RetryPolicy, job: JobRecord, attempt: int) -> float:
    """Seconds the retry ``job`` (retry number ``attempt``) still waits before it starts."""
    waited = (datetime.now(UTC) - job.created_at).total_seconds()
    return max(0.0, policy.delay(attempt) - waited)


def should_retry(policy: RetryPolicy | None, job: JobRecord, attempt: int) -> bool:
    return policy is not None and job.status is JobStatus.FAILED and attempt < policy.count
