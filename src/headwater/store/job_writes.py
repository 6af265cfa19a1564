"""What a worker writes while it runs jobs, grouped into one transaction per batch.

A worker writes step states (``upsert_steps``) and job finishes (``finish_job``, which may
carry the job's last step states). Concurrent jobs' writes share one group commit
(``group_commit.GroupCommit``), so a batch holds step rows and finishes of many jobs, in
the order they were made. ``plan`` turns such a batch into the three parts one
transaction writes:

- step rows of jobs that do not finish in this batch (the newest row per step);
- the finishes (the first per job: a repeat would find the job final already);
- step rows that go with a finish, written only if that finish changes the job. A step
  row of a finishing job written earlier in the batch joins them (the newer row per
  step wins): one statement must never touch a row twice (PostgreSQL forbids it), and a
  worker whose finish is refused no longer owns the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from headwater.store.base import JobStatus, StepUpdate
from headwater.store.queries import dumps
from headwater.store.rows import FinishRequest, StepRow

__all__ = ["JobWrite", "WritePlan", "plan", "results", "step_rows"]


@dataclass(frozen=True, slots=True)
class JobWrite:
    """One caller's part of a batch: step rows, or a finish with its step rows."""

    rows: Sequence[StepRow] = ()
    finish: FinishRequest | None = None


@dataclass(slots=True)
class WritePlan:
    steps: list[StepRow] = field(default_factory=list)
    finishes: list[FinishRequest] = field(default_factory=list)
    finish_steps: list[StepRow] = field(default_factory=list)  # only for changed jobs
    first_finish: dict[str, int] = field(default_factory=dict)  # job id → index in batch


def step_rows(job_id: str, steps: Sequence[StepUpdate]) -> list[StepRow]:
    """Encoded rows, one per step name (of two updates of one step the later wins)."""
    latest = {s.name: s for s in steps}
    return [
        (
            job_id,
            s.name,
            s.action,
            s.status.value,
            s.exit_code,
            None if s.output is None else dumps(s.output),
            s.error,
            s.attempts,
            s.started_at,
            s.finished_at,
        )
        for s in latest.values()
    ]


def plan(batch: Sequence[JobWrite]) -> WritePlan:
    result = WritePlan()
    for i, write in enumerate(batch):
        if write.finish is not None:
            job_id = write.finish[0]
            if not JobStatus(write.finish[2]).is_terminal:
                raise ValueError(f"finish_job needs a final status, not {write.finish[2]!r}")
            if job_id not in result.first_finish:
                result.first_finish[job_id] = i
                result.finishes.append(write.finish)
    finishing = result.first_finish
    plain: dict[tuple[str, str], StepRow] = {}
    carried: dict[tuple[str, str], StepRow] = {}
    for write in batch:
        for row in write.rows:
            key = (row[0], row[1])
            if row[0] in finishing:
                carried[key] = row
            else:
                plain[key] = row
    result.steps = list(plain.values())
    result.finish_steps = list(carried.values())
    return result


def results(batch: Sequence[JobWrite], planned: WritePlan, changed: set[str]) -> list[Any]:
    """Per write: None for step rows, whether it changed the job for a finish."""
    out: list[Any] = []
    for i, write in enumerate(batch):
        if write.finish is None:
            out.append(None)
        else:
            job_id = write.finish[0]
            out.append(job_id in changed and planned.first_finish[job_id] == i)
    return out
