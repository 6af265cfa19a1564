"""Retention on SQLite, PostgreSQL and in memory: old finished jobs go with their steps and logs;
live jobs and recent ones stay, whatever is asked."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from headwater.artifacts import ArtifactStore
from headwater.store import (
    JobFilter,
    JobStatus,
    LogLine,
    LogStream,
    NewJob,
    RejectedEvent,
    StepStatus,
    Store,
)
from headwater.store.base import StepUpdate
from headwater.store.retention import parse_retention, prune
from headwater.store.sql import SqlStore
from headwater.store.tables import jobs, logs
from headwater.testing import InMemoryStore

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)


async def _job(store: Store, status: JobStatus, at: datetime, n_logs: int = 3) -> str:
    (outcome,) = await store.insert_jobs(
        [NewJob(workspace="ws", task="t", input={}, source_type="api")]
    )
    job_id = outcome.id
    await store.upsert_steps(job_id, [StepUpdate("s", "a", StepStatus.COMPLETED, 0)])
    await store.append_logs(
        [LogLine(job_id, "s", LogStream.STDOUT, f"line {i}", at) for i in range(n_logs)]
    )
    finished = at + timedelta(seconds=1) if status.is_terminal else None
    if isinstance(store, InMemoryStore):  # backdate it (no API does: time only moves on)
        job = store.jobs[job_id]
        store.jobs[job_id] = dataclasses.replace(
            job, status=status, created_at=at, finished_at=finished
        )
        return job_id
    assert isinstance(store, SqlStore)
    async with store.write_engine.begin() as conn:
        await conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(status=status.value, created_at=at, finished_at=finished)
        )
    return job_id


async def _ids(store: Store) -> set[str]:
    return {j.id for j in await store.list_jobs(JobFilter(limit=10_000))}


async def _log_owners(store: Store) -> set[str]:
    if isinstance(store, InMemoryStore):
        return {r.job_id for r in store.logs}
    assert isinstance(store, SqlStore)
    async with store.engine.connect() as conn:
        rows = await conn.execute(logs.select().with_only_columns(logs.c.job_id))
        return {r[0] for r in rows}


async def test_prune_deletes_old_finished_jobs_with_their_steps_and_logs(
    store: Store,
) -> None:
    old_done = [await _job(store, JobStatus.COMPLETED, OLD) for _ in range(5)]
    old_failed = await _job(store, JobStatus.FAILED, OLD)
    old_pending = await _job(store, JobStatus.PENDING, OLD)
    old_running = await _job(store, JobStatus.RUNNING, OLD)
    recent_done = await _job(store, JobStatus.COMPLETED, NOW - timedelta(days=1))
    policy = parse_retention("completed=30d,failed=60d")

    dry = await prune(store, policy, dry_run=True)
    assert (dry.jobs, dry.steps, dry.logs) == (5, 5, 15)
    assert len(await _ids(store)) == 9  # a dry run deletes nothing

    seen: list[tuple[str, int]] = []
    total = await prune(store, policy, batch=2, on_batch=lambda k, c: seen.append((k, c.jobs)))
    assert (total.jobs, total.steps, total.logs) == (5, 5, 15)
    assert [n for k, n in seen if k == "completed"] == [2, 2, 1, 0]  # small batches
    left = await _ids(store)
    assert left == {old_failed, old_pending, old_running, recent_done}
    assert not set(old_done) & await _log_owners(store)
    for job_id in old_done:
        assert await store.get_job(job_id) is None
    recent = await store.get_job(recent_done)
    assert recent is not None and [s.name for s in recent.steps] == ["s"]

    # Pending and running jobs are never pruned, even when asked for every status.
    for status in JobStatus:
        await store.prune_jobs(status, NOW + timedelta(days=1), 1000)
    assert await _ids(store) == {old_pending, old_running}


async def test_log_retention_deletes_old_lines_of_every_job(store: Store) -> None:
    running = await _job(store, JobStatus.RUNNING, OLD, n_logs=4)
    await store.append_logs([LogLine(running, "s", LogStream.STDOUT, "fresh", NOW)])
    policy = parse_retention(None, "7d")
    assert (await prune(store, policy, dry_run=True)).logs == 4
    assert (await prune(store, policy, batch=3)).logs == 4
    assert [r.line for r in await store.get_logs(running)] == ["fresh"]
    assert await store.get_job(running) is not None


async def test_rejected_events_are_pruned_by_age(store: Store) -> None:
    await store.insert_rejected(
        [
            RejectedEvent(None, "webhook", "ws/h", "t", {"i": i}, "bad", None, created_at=at)
            for i, at in enumerate([OLD, OLD, NOW])
        ]
    )
    total = await prune(store, parse_retention("rejected=30d"))
    assert total.rejected == 2
    assert [e.created_at for e in await store.list_rejected()] == [NOW]


async def test_store_size_counts_rows_and_bytes(store: Store) -> None:
    await _job(store, JobStatus.COMPLETED, NOW, n_logs=2)
    size = await store.store_size()
    assert set(size.rows) == {"jobs", "steps", "logs", "rejected_events"}
    if isinstance(store, InMemoryStore):  # exact, and no database file to measure
        assert size.bytes is None
        assert (size.rows["jobs"], size.rows["steps"], size.rows["logs"]) == (1, 1, 2)
        return
    assert size.bytes is not None and size.bytes > 0
    if store.dialect == "sqlite":  # exact; PostgreSQL's is the planner's estimate
        assert (size.rows["jobs"], size.rows["steps"], size.rows["logs"]) == (1, 1, 2)


async def test_pruned_jobs_lose_their_artifacts(store: SqlStore, tmp_path: Path) -> None:
    old = await _job(store, JobStatus.COMPLETED, OLD)
    recent = await _job(store, JobStatus.COMPLETED, NOW - timedelta(days=1))
    src = tmp_path / "src"
    src.mkdir()
    (src / "report.html").write_text("<h1>")
    artifacts = ArtifactStore(tmp_path / "kept")
    for job_id in (old, recent):
        artifacts.collect(job_id, "s", src)
    await prune(store, parse_retention("completed=30d"))
    assert await artifacts.sweep(store) == 1
    assert artifacts.artifacts_of(old) == []
    assert [a.name for a in artifacts.artifacts_of(recent)] == ["report.html"]
