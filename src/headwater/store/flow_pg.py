"""The claim with flow limits on PostgreSQL (``store.flow``): one call of the function
``headwater_claim_flow`` (migration 0014), one round trip and one transaction.

The function picks the window as the fast path does (``FOR UPDATE SKIP LOCKED``), claims
the jobs without limits and decides over the rest while it still holds them, so
concurrent claimers work on disjoint rows. Concurrency keys are try-locked (a key whose
head another claimer holds is "busy" for this round); rate keys are waited for in one
order. The counts are read after the locks, in a later statement of the function: under
READ COMMITTED that is a fresh snapshot, so every claim of the key committed before is
counted. Besides the jobs, the function reports what it found (``FlowClaim``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from headwater.store.base import JobRecord, StepRecord
from headwater.store.fastpath import job_record, step_record

__all__ = ["FlowClaim", "pg_claim_flow"]

_CALL = "SELECT * FROM headwater_claim_flow($1, $2::text[], $3, $4::text[], $5::text[])"
_KIND = 29  # the column after the job's 19 and the step's 10


@dataclass(slots=True)
class FlowClaim:
    claimed: list[JobRecord] = field(default_factory=list)  # with their steps
    held: int = 0  # jobs with limits in the window
    full_keys: set[str] = field(default_factory=set)
    full_rates: set[str] = field(default_factory=set)
    busy_keys: set[str] = field(default_factory=set)  # another claimer held their head
    retry_at: datetime | None = None  # when the first full rate window frees a start
    skipped: list[str] = field(default_factory=list)  # pending jobs ended by skip_new
    cancel_requested: list[str] = field(default_factory=list)  # told to stop


async def pg_claim_flow(
    db: Any,
    worker_id: str,
    signatures: Sequence[str],
    limit: int,
    set_aside: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> FlowClaim:
    rows = await db.fetch(
        _CALL, worker_id, list(signatures), limit, list(set_aside[0]), list(set_aside[1])
    )
    result = FlowClaim()
    jobs: list[Any] = []
    for row in rows:
        kind = row[_KIND]
        if kind == "job":
            jobs.append(row)
        elif kind == "held":
            result.held = int(row[_KIND + 1])
        elif kind == "full_c":
            result.full_keys.add(row[_KIND + 1])
        elif kind == "full_r":
            result.full_rates.add(row[_KIND + 1])
        elif kind == "busy":
            result.busy_keys.add(row[_KIND + 1])
        elif kind == "retry":
            result.retry_at = row[_KIND + 2]
        elif kind == "skipped":
            result.skipped.append(row[_KIND + 1])
        elif kind == "cancel":
            result.cancel_requested.append(row[_KIND + 1])
    result.claimed = _records(jobs)
    return result


def _decode(value: Any) -> Any:
    # SQLAlchemy's asyncpg codec hands jsonb over as text; decode whatever arrives.
    return json.loads(value) if isinstance(value, str | bytes) else value


def _records(rows: Sequence[Any], decode: Callable[[Any], Any] = _decode) -> list[JobRecord]:
    jobs: list[JobRecord] = []
    current: list[Any] | None = None
    steps: list[StepRecord] = []
    for row in rows:  # ordered by job: consecutive rows of one job carry its steps
        if current is None or row[0] != current[0]:
            if current is not None:
                jobs.append(job_record(current, steps, decode))
            current, steps = list(row[:19]), []
        if row[19] is not None:
            steps.append(step_record(row[19:29], decode))
    if current is not None:
        jobs.append(job_record(current, steps, decode))
    return jobs
