"""The encoded rows the hot paths write, shared by ``fastpath`` (the interface) and
``job_writes`` (the plan of one write) so that neither has to import the other for them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from headwater.store.base import JobStatus

__all__ = ["FinishRequest", "NewJobRow", "StepRow"]

# (id, workspace, task, input JSON text, source_type, source_id, dedup_key, tag signature,
#  parent_job_id, max_attempts): one job to insert, already encoded.
NewJobRow = tuple[str, str, str, str, str, str | None, str | None, str, str | None, int]

# (job_id, name, action, status, exit_code, output JSON text or None, error, attempts,
#  started_at, finished_at): one step row to upsert, already encoded.
StepRow = tuple[
    str,
    str,
    str | None,
    str,
    int | None,
    str | None,
    str | None,
    int,
    datetime | None,
    datetime | None,
]

# (job_id, worker_id, status, output, error), as ``Store.finish_jobs`` takes it.
FinishRequest = tuple[str, str | None, JobStatus, Any, str | None]
