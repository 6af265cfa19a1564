"""Property: whatever the sequence of store calls, a job never leaves a final status.

A hypothesis state machine drives a real SQLite store (SQLite only, to stay fast; the
transitions are the same SQL on PostgreSQL and are covered by test_store.py there), and
the same machine drives ``headwater.testing.InMemoryStore``, which must keep the rule too.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

from headwater.errors import ConflictError
from headwater.store import JobStatus, NewJob, Store
from headwater.store.sql import open_store
from headwater.testing import InMemoryStore

T = TypeVar("T")
FINAL = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]
WORKERS = st.sampled_from(["w1", "w2"])


class JobLifecycle(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="hw-states-")
        self.loop = asyncio.new_event_loop()
        self.store = self.run(self.open())
        self.final: dict[str, str] = {}  # job id → the final status it reached
        self.owner: dict[str, str] = {}  # running job id → worker

    async def open(self) -> Store:
        return await open_store(f"sqlite:///{self.dir}/hw.db")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(target=jobs, count=st.integers(1, 3), key=st.sampled_from([None, "k1", "k2"]))
    def insert(self, count: int, key: str | None) -> Any:
        new = [NewJob("ws", "t", {}, "api", dedup_key=key, max_attempts=2) for _ in range(count)]
        outcomes = self.run(self.store.insert_jobs(new))
        return multiple(*{o.id for o in outcomes})

    @rule(worker=WORKERS, limit=st.integers(1, 3))
    def claim(self, worker: str, limit: int) -> None:
        for job in self.run(self.store.claim_jobs(worker, ["script"], limit)):
            assert job.id not in self.final, f"claimed final job {job.id}"
            self.owner[job.id] = worker

    @rule(job=jobs, worker=st.sampled_from([None, "w1", "w2"]), status=st.sampled_from(FINAL))
    def finish(self, job: str, worker: str | None, status: JobStatus) -> None:
        changed = self.run(self.store.finish_job(job, worker, status, output={"by": worker}))
        if job in self.final:
            assert not changed, f"finished {job} twice"
        elif worker is not None and self.owner.get(job) != worker:
            assert not changed, f"{worker} finished a job it does not own"
        if changed:
            self.final[job] = status.value

    @rule(job=jobs)
    def cancel(self, job: str) -> None:
        try:
            record = self.run(self.store.request_cancel(job))
        except ConflictError:
            assert job in self.final
            return
        assert job not in self.final, f"cancel accepted on final job {job}"
        if record.status == JobStatus.CANCELLED:
            self.final[job] = "cancelled"

    @precondition(lambda self: bool(self.owner))
    @rule(worker=WORKERS)
    def heartbeat_or_lose(self, worker: str) -> None:
        self.run(self.store.register_worker(worker, worker, frozenset({"script"})))
        for job in self.run(self.store.heartbeat(worker)):
            assert job not in self.final

    @rule()
    def recover(self) -> None:
        for job in self.run(self.store.recover_stale_jobs(stale_after=0)):
            assert job.id not in self.final, f"recovered final job {job.id}"
            self.owner.pop(job.id, None)
            if not job.requeued:
                got = self.run(self.store.get_job(job.id))
                assert got is not None and got.status.is_terminal
                self.final[job.id] = got.status.value

    @invariant()
    def final_statuses_stick(self) -> None:
        jobs = self.run(self.store.get_jobs(list(self.final)))
        assert {j.id: j.status.value for j in jobs} == self.final


class MemoryJobLifecycle(JobLifecycle):
    async def open(self) -> Store:
        return InMemoryStore()


SETTINGS = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
JobLifecycle.TestCase.settings = SETTINGS
MemoryJobLifecycle.TestCase.settings = SETTINGS
TestJobLifecycle = JobLifecycle.TestCase
TestMemoryJobLifecycle = MemoryJobLifecycle.TestCase
