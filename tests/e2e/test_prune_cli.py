"""``headwater prune`` through the real CLI: dry run, progress, JSON counts, and what
stays (live and recent jobs)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from headwater.store import JobStatus, LogLine, LogStream, NewJob
from headwater.store.sql import open_store
from headwater.store.tables import jobs
from tests.e2e.procs import Up, eventually, run_cli

OLD = datetime.now(UTC) - timedelta(days=45)


async def _seed(url: str) -> dict[str, str]:
    store = await open_store(url)
    try:
        made: dict[str, str] = {}
        plan = [
            ("old-done", JobStatus.COMPLETED, OLD),
            ("old-done-2", JobStatus.COMPLETED, OLD),
            ("old-failed", JobStatus.FAILED, OLD),
            ("old-pending", JobStatus.PENDING, OLD),
            ("new-done", JobStatus.COMPLETED, datetime.now(UTC)),
        ]
        for name, status, at in plan:
            (outcome,) = await store.insert_jobs(
                [NewJob(workspace="ws", task=name, input={}, source_type="api")]
            )
            await store.append_logs([LogLine(outcome.id, None, LogStream.STDOUT, "x", at)])
            finished = at if status.is_terminal else None
            async with store.write_engine.begin() as conn:
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.id == outcome.id)
                    .values(status=status.value, created_at=at, finished_at=finished)
                )
            made[name] = outcome.id
        return made
    finally:
        await store.close()


async def _tasks(url: str) -> set[str]:
    store = await open_store(url)
    try:
        async with store.engine.connect() as conn:
            return {r[0] for r in await conn.execute(jobs.select().with_only_columns(jobs.c.task))}
    finally:
        await store.close()


def test_prune_deletes_old_finished_jobs_and_keeps_live_and_recent_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hw.db"
    asyncio.run(_seed(url))

    dry = run_cli("prune", "--older-than", "30d", "--dry-run", "--json", "--db", url)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {
        "dry_run": True,
        "jobs": 3,
        "steps": 0,
        "logs": 3,
        "rejected_events": 0,
    }
    assert len(asyncio.run(_tasks(url))) == 5

    only_failed = run_cli("prune", "--older-than", "30d", "--status", "failed", "--db", url)
    assert only_failed.returncode == 0, only_failed.stderr
    assert "deleted 1 jobs (0 steps, 1 log lines)" in only_failed.stdout
    assert "old-failed" not in asyncio.run(_tasks(url))

    rest = run_cli("prune", "--older-than", "30d", "--batch", "1", "--json", "--db", url)
    assert rest.returncode == 0, rest.stderr
    assert json.loads(rest.stdout)["jobs"] == 2
    assert asyncio.run(_tasks(url)) == {"old-pending", "new-done"}


def test_prune_explains_a_bad_age_or_status(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hw.db"
    bad_age = run_cli("prune", "--older-than", "soon", "--db", url)
    assert bad_age.returncode == 1 and "number and a unit" in bad_age.stderr
    bad_status = run_cli("prune", "--older-than", "1d", "--status", "running", "--db", url)
    assert bad_status.returncode == 1 and "never deleted" in bad_status.stderr


def test_up_with_retention_prunes_old_jobs_while_it_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hw.db"
    asyncio.run(_seed(url))
    ws = tmp_path / "ws.yaml"
    ws.write_text(
        "tasks:\n  hello:\n    flow:\n      say: { action: echo }\n"
        "actions:\n  echo: { type: script, script: echo hi }\n"
    )
    up = Up(ws, tmp_path, url, "--retention", "completed=30d,failed=30d", "--log-retention", "7d")
    try:
        eventually(
            lambda: asyncio.run(_tasks(url)) == {"old-pending", "new-done"}, 20, "the pruning"
        )
        text = up.client.get("/metrics").text
        assert 'headwater_store_rows{table="jobs"}' in text
        assert "headwater_store_bytes" in text
    finally:
        up.stop()


def test_up_refuses_a_bad_retention(tmp_path: Path) -> None:
    ws = tmp_path / "ws.yaml"
    ws.write_text("tasks: {}\n")
    bad = run_cli("up", str(ws), "--retention", "running=1d", "--db", f"sqlite:///{tmp_path}/x.db")
    assert bad.returncode == 1 and "never deleted" in bad.stderr
