"""One bad value never stops a source or fails its neighbours (issue 14, defects 1–4).

Real stores (SQLite and PostgreSQL through ``db_url``), real consumer processes."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from headwater.dispatch.dispatcher import Dispatcher, DispatchStatus, Event
from headwater.store.base import JobFilter, JobStatus, Store
from headwater.workspace.loader import load_workspace
from tests.integration.test_engine import start_node
from tests.integration.test_event_sources import _state_is, running

BAD_LINES_CONSUMER = r"""
actions:
  consume:
    type: script
    language: python
    script: |
      import sys
      w = sys.stdout.write
      w('OUTPUT: {"orderId": "1"}\n')
      w('OUTPUT: {"orderId": "\\ud800"}\n')
      w('OUTPUT: {"orderId": "a\\u0000b"}\n')
      w("OUTPUT: " + "[" * 100000 + "\n")
      w('OUTPUT: {"orderId": "nan", "amount": NaN}\n')
      w('OUTPUT: {"orderId": "2"}\n')
  handle:
    type: script
    script: "echo handled"
tasks:
  consumer:
    flow:
      poll: { action: consume }
  process-order:
    input:
      orderId: { type: string, required: true }
      amount: { type: number }
    flow:
      handle: { action: handle }
triggers:
  orders:
    type: event_source
    task: consumer
    target_task: process-order
    restart_policy: never
"""


async def test_bad_output_lines_are_rejected_or_skipped_and_the_source_goes_on(
    tmp_path: Path, db_url: str
) -> None:
    async with running(tmp_path, db_url, BAD_LINES_CONSUMER) as rt:
        await rt.wait_for(lambda: _state_is(rt, "orders", "idle"), what="the consumer to end")
        jobs = await rt.wait_for(
            lambda: _all_final(rt, "process-order", 2), what="the two good events' jobs"
        )
        assert sorted(j.input["orderId"] for j in jobs) == ["1", "2"]
        assert {j.status for j in jobs} == {JobStatus.COMPLETED}
        (consumer,) = await rt.jobs("consumer")
        assert consumer.status is JobStatus.COMPLETED  # no RecursionError on the deep line
        state = await rt.state("orders")
        assert state["last_error"] is None
        rejected = await rt.node.store.list_rejected()
        reasons = sorted(r.reason for r in rejected)
        assert len(reasons) == 2, reasons
        assert "\\u0000" in reasons[1] or "\\u0000" in reasons[0]
        assert any("lone surrogate" in r for r in reasons)
        # The rejected payloads are kept, cleaned, so that they can be looked at.
        assert sorted(r.payload["orderId"] for r in rejected) == ["a\ufffdb", "\ufffd"]
        logs = "\n".join(
            line.line for line in await rt.node.store.get_logs(consumer.id, limit=1000)
        )
        assert "deeper than" in logs
        assert "NaN is not a JSON number" in logs


async def _all_final(rt: Any, task: str, n: int) -> Any:
    jobs = await rt.jobs(task)
    return jobs if len(jobs) == n and all(j.status.is_terminal for j in jobs) else None


WS = """
actions:
  a: { type: script, script: "true" }
tasks:
  t:
    flow:
      s: { action: a }
"""


async def test_one_bad_row_never_fails_its_batch_mates(tmp_path: Path, store: Store) -> None:
    (tmp_path / "ws.yaml").write_text(WS)
    ws = load_workspace(tmp_path / "ws.yaml")
    dispatcher = Dispatcher(store, lambda: ws)
    bad: list[dict[str, Any]] = [{"x": "\ud800"}, {"x": "a\x00b"}, {"x": math.nan}]
    events = [Event("t", {"n": i}, "api", source_id="batch") for i in range(10)]
    for slot, payload in zip((2, 5, 9), bad, strict=True):
        events[slot] = Event("t", payload, "api", source_id="batch")
    outcomes = await dispatcher.dispatch(events)
    statuses = [o.status for o in outcomes]
    assert [i for i, s in enumerate(statuses) if s is DispatchStatus.REJECTED] == [2, 5, 9]
    assert statuses.count(DispatchStatus.ACCEPTED) == 7
    assert all(outcomes[i].reason for i in (2, 5, 9))
    jobs = await store.list_jobs(JobFilter(limit=100))
    assert sorted(j.input["n"] for j in jobs) == [0, 1, 3, 4, 6, 7, 8]
    rejected = await store.list_rejected(source_id="batch")
    assert len(rejected) == 3
    assert all("cannot keep" in r.reason for r in rejected)


STEP_FUNCS = """
import math

def nan():
    return {"ratio": math.nan}

def nul():
    return {"text": "a\\x00b"}
"""


async def test_a_step_output_no_store_can_keep_fails_the_step_and_the_job_finishes(
    tmp_path: Path, db_url: str
) -> None:
    module = f"hw_bad_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(STEP_FUNCS)
    node = await start_node(
        tmp_path,
        db_url,
        f"""
        actions:
          nan: {{ type: function, function: "{module}:nan" }}
          nul: {{ type: function, function: "{module}:nul" }}
          script_nul:
            type: script
            script: |
              printf '%s\\n' 'OUTPUT: {{"text": "a\\u0000b"}}'
          script_nan:
            type: script
            script: |
              echo 'OUTPUT: {{"ratio": NaN}}'
        tasks:
          nan: {{ flow: {{ s: {{ action: nan }} }} }}
          nul: {{ flow: {{ s: {{ action: nul }} }} }}
          script_nul: {{ flow: {{ s: {{ action: script_nul }} }} }}
          script_nan: {{ flow: {{ s: {{ action: script_nan }} }} }}
        """,
    )
    try:
        job = await node.run_one("nan", {})
        assert job.status is JobStatus.FAILED
        assert "Out of range float values are not JSON compliant" in (job.error or "")
        job = await node.run_one("nul", {})
        assert job.status is JobStatus.FAILED
        assert "\\u0000 (NUL)" in (job.error or "")
        job = await node.run_one("script_nul", {})
        assert job.status is JobStatus.FAILED
        assert "an OUTPUT value cannot be stored" in (job.error or "")
        # Not JSON at all: skipped with a warning, like any malformed OUTPUT line.
        job = await node.run_one("script_nan", {})
        assert job.status is JobStatus.COMPLETED
        assert not job.output
        lines = [r.line for r in await node.store.get_logs(job.id)]
        assert any("NaN is not a JSON number" in line for line in lines)
    finally:
        await node.close()
        sys.modules.pop(module, None)
        if str(tmp_path.resolve()) in sys.path:
            sys.path.remove(str(tmp_path.resolve()))


WAITING_CONSUMER = """
actions:
  consume:
    type: script
    language: python
    script: |
      import os, sys, time
      print('OUTPUT: {"orderId": "1"}', flush=True)
      while not os.path.exists(os.environ["DONE_FILE"]):
          time.sleep(0.05)
  handle: { type: script, script: "true" }
tasks:
  consumer:
    flow:
      poll: { action: consume }
  process-order:
    input:
      orderId: { type: string, required: true }
    flow:
      handle: { action: handle }
triggers:
  orders:
    type: event_source
    task: consumer
    target_task: process-order
    restart_policy: never
"""


async def test_a_store_write_that_keeps_failing_shows_as_the_triggers_last_error(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = tmp_path / "done"
    monkeypatch.setenv("DONE_FILE", str(done))
    async with running(tmp_path, db_url, WAITING_CONSUMER) as rt:
        store = rt.node.store
        insert = store.insert_jobs
        failing = True

        async def flaky_insert(jobs: Any, cursor: Any = None) -> Any:
            if failing and any(j.task == "process-order" for j in jobs):
                raise ConnectionError("the database is unreachable")
            return await insert(jobs, cursor)

        monkeypatch.setattr(store, "insert_jobs", flaky_insert)

        async def last_error() -> Any:
            return (await rt.state("orders"))["last_error"]

        error = await rt.wait_for(last_error, what="the failing emit in last_error")
        assert "events cannot be stored" in error
        assert "unreachable" in error
        assert (await rt.state("orders"))["state"] == "running"
        failing = False
        await rt.wait_for(lambda: rt.jobs("process-order"), what="the event's job")
        assert await last_error() is None
        done.touch()
        await rt.wait_for(lambda: _state_is(rt, "orders", "idle"), what="the consumer to end")


async def test_an_output_the_store_refuses_at_finish_fails_the_job_instead_of_hanging(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of defence: whatever produced it, an output the store refuses makes
    the job fail with the reason (before, the job stayed running and was requeued)."""
    node = await start_node(tmp_path, db_url, WS)
    try:
        execute = node.executor.execute

        async def nan_output(*args: Any, **kwargs: Any) -> Any:
            outcome = await execute(*args, **kwargs)
            steps = tuple(dataclasses.replace(s, output={"x": math.nan}) for s in outcome.steps)
            return dataclasses.replace(outcome, output={"s": {"x": math.nan}}, steps=steps)

        monkeypatch.setattr(node.executor, "execute", nan_output)
        job = await asyncio.wait_for(node.run_one("t", {}), 30)
        assert job.status is JobStatus.FAILED
        assert "the job's output cannot be stored" in (job.error or "")
        assert job.output is None
    finally:
        await node.close()
