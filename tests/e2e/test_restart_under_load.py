"""``headwater up`` SIGKILLed with a backlog and an event source ingesting, then started
again: it answers /healthz, runs jobs and ingests again without first working through
the backlog (bench/restart.py measures the same at 100,000 pending jobs)."""

from __future__ import annotations

import asyncio
import sqlite3
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from headwater.store.base import NewJob
from headwater.store.sql import open_store
from headwater.workspace.loader import load_workspace
from tests.e2e.procs import Up, eventually

# One slot runs the consumer, the other the targets (5 a second): the backlog of 300
# takes a minute to run, so ingest after the restart can only be seen in time if it
# does not wait for it.
WORKSPACE = """
actions:
  produce:
    type: script
    language: python
    script: |
      import sys, time
      i = 0
      while True:
          i += 1
          print('OUTPUT: {"n": %d}' % i, flush=True)
          time.sleep(0.02)
  handle:
    type: script
    script: "sleep 0.2"
tasks:
  consumer:
    flow:
      produce: { action: produce }
  target:
    input:
      n: { type: integer }
    flow:
      handle: { action: handle }
triggers:
  src:
    type: event_source
    task: consumer
    target_task: target
"""
BACKLOG = 300


async def _seed(db_url: str, workspace: str) -> None:
    store = await open_store(db_url)
    try:
        await store.insert_jobs(
            [
                NewJob(workspace, "target", {"n": -i}, "api", tags=frozenset({"script"}))
                for i in range(1, BACKLOG + 1)
            ]
        )
    finally:
        await store.close()


def _count(db: Path, where: str, *args: object) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        return int(conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", args).fetchone()[0])


def test_a_killed_server_resumes_jobs_and_ingest_without_waiting_for_the_backlog(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(WORKSPACE))
    db = tmp_path / "headwater.db"
    url = f"sqlite:///{db}"
    asyncio.run(_seed(url, load_workspace(path).name))
    backlog = "source_type = 'api' AND status = 'pending'"
    events = "source_type = 'event_source'"

    up = Up(path, tmp_path, url, "--concurrency", "2")
    try:
        eventually(lambda: _count(db, events) > 0, 30, "events ingested before the kill")
    finally:
        up.kill()  # SIGKILL: its consumer dies with it

    restarted = datetime.now(UTC).isoformat(" ", "microseconds")[:26]
    t0 = time.monotonic()
    again = Up(path, tmp_path, url, "--concurrency", "2")
    try:
        healthy = time.monotonic() - t0
        eventually(
            lambda: _count(db, f"{events} AND created_at > ?", restarted) > 0,
            20,
            "the restarted consumer's first event",
        )
        ingesting = time.monotonic() - t0
        # Most of the backlog still waits: ingest did not queue behind it.
        assert _count(db, backlog) > BACKLOG // 2, "the consumer waited for the backlog"
        eventually(
            lambda: _count(db, "status = 'completed' AND finished_at > ?", restarted) > 0,
            20,
            "a job completed after the restart",
        )
        print(f"healthy after {healthy:.2f} s, ingesting after {ingesting:.2f} s")
    finally:
        again.kill()
