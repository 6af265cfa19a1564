"""The encoded rows the hot paths write, shared by ``fastpath`` (the interface) and
``job_writes`` (the plan of one write) so that neither has to import the other for them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from headwater.store.base import JobFlow, JobStatus

__all__ = ["NO_FLOW_ROW", "FinishRequest", "FlowRow", "HeldRow", "NewJobRow", "StepRow", "flow_row"]

# (id, workspace, task, input JSON text, source_type, source_id, dedup_key, tag signature,
#  parent_job_id, max_attempts, priority, concurrency_key, concurrency_limit,
#  concurrency_strategy, rate_key, rate_limit, rate_per): one job to insert, encoded. The
#  limits are NULL when their key is (see ``flow_row``).
NewJobRow = tuple[
    str,
    str,
    str,
    str,
    str,
    str | None,
    str | None,
    str,
    str | None,
    int,
    int,
    str | None,
    int | None,
    str | None,
    str | None,
    int | None,
    float | None,
]

# (id, concurrency_key, rate_key): a pending job with flow limits the claim's fast path
# passed over (store/flow.py claims it).
HeldRow = tuple[str, str | None, str | None]

# The seven flow columns of a NewJobRow, from priority on.
FlowRow = tuple[int, str | None, int | None, str | None, str | None, int | None, float | None]

NO_FLOW_ROW: FlowRow = (0, None, None, None, None, None, None)


def flow_row(priority: int, flow: JobFlow) -> FlowRow:
    if not flow.limited:
        return NO_FLOW_ROW if priority == 0 else (priority, *NO_FLOW_ROW[1:])
    keyed = flow.concurrency_key is not None
    rated = flow.rate_key is not None
    return (
        priority,
        flow.concurrency_key,
        flow.concurrency_limit if keyed else None,
        flow.concurrency_strategy.value if keyed else None,
        flow.rate_key,
        flow.rate_limit if rated else None,
        flow.rate_per if rated else None,
    )


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
