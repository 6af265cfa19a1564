"""A task retry's input was sealed for its first attempt's source: the worker still
fills the secret in for every retry (and only along a chain of retries)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from headwater.store.base import JobRecord, JobStatus
from headwater.worker.secret_guard import SecretGuard
from headwater.workspace.secret_refs import seal
from headwater.workspace.secrets import Redactor

SECRETS = {"token": "retry-guard-s3cr3t"}


def job(job_id: str, source_type: str, source_id: str | None, input: Any) -> JobRecord:
    return JobRecord(
        id=job_id,
        workspace="ws",
        task="deploy",
        status=JobStatus.RUNNING,
        input=input,
        output=None,
        error=None,
        source_type=source_type,
        source_id=source_id,
        dedup_key=None,
        tags=frozenset(),
        parent_job_id=None,
        worker_id=None,
        attempt=1,
        max_attempts=3,
        cancel_requested=False,
        created_at=datetime.now(UTC),
        started_at=None,
        finished_at=None,
    )


class _Plane:
    def __init__(self, jobs: dict[str, JobRecord], claimed: JobRecord) -> None:
        self.jobs = jobs
        self.claimed = claimed

    async def claim_jobs(self, worker_id: str, tags: Sequence[str], limit: int) -> list[JobRecord]:
        return [self.claimed]

    async def get_job(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)


async def test_every_retry_of_a_triggered_job_gets_the_secret() -> None:
    sealed = seal({"token": SECRETS["token"]}, SECRETS, "cron-trigger")
    first = job("j1", "scheduler", "cron-trigger", sealed)
    second = job("j2", "retry", "j1", sealed)
    third = job("j3", "retry", "j2", sealed)
    jobs = {j.id: j for j in (first, second, third)}
    guard = SecretGuard(_Plane(jobs, third), lambda: SECRETS, lambda: Redactor([]))  # type: ignore[arg-type]
    (claimed,) = await guard.claim_jobs("w", [], 1)
    assert claimed.input == {"token": SECRETS["token"]}

    # a job claiming to be a retry of a job of another source does not unseal
    forged = dataclasses.replace(third, source_type="api", source_id="elsewhere")
    guard = SecretGuard(_Plane(jobs, forged), lambda: SECRETS, lambda: Redactor([]))  # type: ignore[arg-type]
    (claimed,) = await guard.claim_jobs("w", [], 1)
    assert claimed.input != {"token": SECRETS["token"]}
