"""``LocalEmitter``: an event source's batches into the store this process uses (SQLite,
PostgreSQL, in memory): the counts the consumer's hook relies on, the cursor stored with
the jobs, and a store failure shown as the trigger's last error until a batch succeeds."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher
from headwater.store.base import JobFilter, JobStatus, NewJob, Store
from headwater.triggers.emitter import EmitBatch, LocalEmitter
from headwater.workspace.loader import load_workspace
from headwater.workspace.models import Workspace

WS = """
actions:
  noop:
    type: script
    script: "true"
tasks:
  target:
    input:
      n: { type: integer, required: true }
      kind: { type: string }
    flow:
      s: { action: noop }
"""
TRIGGER = "ws/orders"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / "ws.yaml").write_text(textwrap.dedent(WS))
    return load_workspace(tmp_path / "ws.yaml")


def batch(events: list[tuple[str, dict[str, Any]]], **extra: Any) -> EmitBatch:
    return EmitBatch(TRIGGER, "consumer-job", "target", {"kind": "k"}, events, **extra)


async def test_emit_counts_what_became_jobs_and_stores_the_cursor(
    store: Store, ws: Workspace
) -> None:
    emitter = LocalEmitter(store, Dispatcher(store, lambda: ws))
    try:
        first = await emitter.emit(
            batch(
                [("a", {"n": 1}), ("b", {"n": "x"}), ("c", {"n": 3}), ("d", {"n": 4})],
                rejected={3: "no store can keep it"},
                cursor="c-4",
            )
        )
        assert (first.accepted, first.duplicates, first.rejected) == (2, 0, 2)
        assert first.in_flight == 2 and first.refused == 0
        jobs = {j.dedup_key: j for j in await store.list_jobs(JobFilter(limit=10))}
        assert set(jobs) == {"a", "c"}
        assert jobs["a"].input == {"n": 1, "kind": "k"}
        assert jobs["a"].source_type == "event_source" and jobs["a"].source_id == TRIGGER
        cursor = await store.get_cursor(TRIGGER)
        assert cursor is not None and cursor.cursor == "c-4"
        reasons = {r.dedup_key: r.reason for r in await store.list_rejected(source_id=TRIGGER)}
        assert "no store can keep it" in reasons["d"]

        again = await emitter.emit(batch([("a", {"n": 1}), ("e", {"n": 5})], want_in_flight=False))
        assert (again.accepted, again.duplicates, again.rejected) == (1, 1, 0)
        assert again.in_flight is None
        assert await emitter.in_flight(TRIGGER) == 3
        assert emitter.error(TRIGGER) is None
    finally:
        emitter.close()


class FlakyStore:
    """The store, except that job inserts fail while ``down`` is set."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = True

    async def insert_jobs(self, jobs: list[NewJob], cursor: Any = None) -> Any:
        if self.down:
            raise ConnectionError("database unreachable\nsecond line")
        return await self._store.insert_jobs(jobs, cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_failing_store_is_the_triggers_last_error_until_a_batch_succeeds(
    store: Store, ws: Workspace
) -> None:
    flaky = FlakyStore(store)
    emitter = LocalEmitter(flaky, Dispatcher(flaky, lambda: ws))  # type: ignore[arg-type]
    try:
        with pytest.raises(ConnectionError):
            await emitter.emit(batch([("a", {"n": 1})]))
        error = emitter.error(TRIGGER)
        assert error == "events cannot be stored (retrying): database unreachable"
        assert emitter.error("ws/other") is None
        flaky.down = False
        result = await emitter.emit(batch([("a", {"n": 1})]))
        assert result.accepted == 1
        assert emitter.error(TRIGGER) is None
    finally:
        emitter.close()


async def test_a_finished_job_wakes_a_waiting_consumer(store: Store, ws: Workspace) -> None:
    emitter = LocalEmitter(store, Dispatcher(store, lambda: ws))
    try:
        await emitter.emit(batch([("a", {"n": 1})]))
        waiting = asyncio.create_task(emitter.wait_for_finished(120))
        (job,) = await store.claim_jobs("w1", ["script"], 1)
        assert await store.finish_job(job.id, "w1", JobStatus.COMPLETED)
        await asyncio.wait_for(waiting, 30)  # woken, long before its 120 s
        assert await emitter.in_flight(TRIGGER) == 0
    finally:
        emitter.close()


async def test_waiting_for_a_finish_ends_at_its_timeout(store: Store, ws: Workspace) -> None:
    emitter = LocalEmitter(store, Dispatcher(store, lambda: ws))
    try:
        await asyncio.wait_for(emitter.wait_for_finished(0.05), 30)  # no job finished
    finally:
        emitter.close()
