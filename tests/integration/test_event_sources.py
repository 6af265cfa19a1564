"""Event-source triggers keep every promise of the seed, with real consumer processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from headwater.node import Node, NodeSettings
from headwater.store.base import JobFilter, JobRecord, JobStatus, LogStream, NewJob
from headwater.triggers.event_source import CONSUMER_SOURCE_TYPE
from headwater.worker.worker import WorkerSettings
from tests.polling import join, stays_true_for


@dataclass
class Running:
    node: Node
    path: Path
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]

    async def jobs(self, task: str | None = None, **kw: Any) -> list[JobRecord]:
        return await self.node.store.list_jobs(JobFilter(task=task, limit=1000, **kw))

    async def state(self, name: str) -> dict[str, Any]:
        return dict((await self.node.trigger_states())[name])

    async def wait_for(
        self, check: Callable[[], Any], timeout: float = 20, what: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def running(tmp_path: Path, db_url: str, workspace: str) -> AsyncIterator[Running]:
    path = tmp_path / "ws.yaml"
    if not path.exists():
        path.write_text(textwrap.dedent(workspace))
    node = Node(
        path,
        NodeSettings(
            db_url=db_url,
            kill_grace=1.0,
            worker=WorkerSettings(concurrency=16, shutdown_timeout=0.5),
        ),
    )
    await node.start()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(node.run_worker(stop)),
        asyncio.create_task(node.run_triggers(stop, watch=False)),
    ]
    try:
        yield Running(node, path, stop, tasks)
    finally:
        stop.set()
        try:
            await join(tasks, 30)  # an error in the worker or the manager fails the test
        finally:
            await node.close()


CONSUMER = """
actions:
  consume:
    type: script
    language: python
    script: |
      import json, sys
      print("starting consumer for", "{{ input.unused | default('queue') }}")
      print("OUTPUT: " + json.dumps({"orderId": "1", "amount": 10}))
      print("")
      print("OUTPUT: {not json")
      print("OUTPUT: [1, 2]")
      print("oops on stderr", file=sys.stderr)
      print("OUTPUT: " + json.dumps({"orderId": "2", "amount": 20, "priority": "low"}))
      print("OUTPUT: " + json.dumps({"orderId": 3}))
      print("done")
  handle:
    type: script
    script: "echo 'OUTPUT: {\\"handled\\": \\"{{ input.orderId }}\\"}'"
tasks:
  consumer:
    flow:
      poll: { action: consume }
  process-order:
    input:
      orderId: { type: string, required: true }
      amount: { type: number }
      priority: { type: string }
    flow:
      handle: { action: handle, input: { orderId: "{{ input.orderId }}" } }
triggers:
  orders:
    type: event_source
    task: consumer
    target_task: process-order
    input:
      priority: high
    restart_policy: never
"""


async def test_output_protocol_creates_one_job_per_valid_line(tmp_path: Path, db_url: str) -> None:
    async with running(tmp_path, db_url, CONSUMER) as rt:
        await rt.wait_for(
            lambda: _state_is(rt, "orders", "idle"), what="the consumer to finish (never)"
        )
        jobs = await rt.jobs("process-order")
        by_order = {j.input["orderId"]: j for j in jobs}
        assert sorted(by_order) == ["1", "2"]
        # Trigger input is a default; the event's own fields win.
        assert by_order["1"].input == {"orderId": "1", "amount": 10, "priority": "high"}
        assert by_order["2"].input["priority"] == "low"
        for job in jobs:
            assert job.source_type == "event_source"
            assert job.source_id == f"{rt.node.workspace().name}/orders"
        # An event whose input does not validate is a rejected event, visible with reason.
        (rejected,) = await rt.node.store.list_rejected(f"{rt.node.workspace().name}/orders")
        assert rejected.payload == {"orderId": 3}
        assert "orderId" in rejected.reason
        (consumer,) = await rt.jobs(source_type=CONSUMER_SOURCE_TYPE)
        logs = await rt.node.store.get_logs(consumer.id)
        lines = [(r.stream, r.line) for r in logs]
        assert (LogStream.STDOUT, "done") in lines
        assert (LogStream.STDERR, "oops on stderr") in lines
        assert not any(line == "" for _, line in lines)
        warnings = [line for s, line in lines if s is LogStream.SYSTEM and "warning" in line]
        assert any("malformed JSON" in w for w in warnings)
        assert any("JSON object" in w for w in warnings)
        # OUTPUT lines became jobs, not log lines.
        assert not any(line.startswith('OUTPUT: {"orderId"') for _, line in lines)
        state = await rt.state("orders")
        assert state["events_accepted"] == 2
        assert state["events_rejected"] == 1


REPLAYING = """
actions:
  emit:
    type: script
    language: python
    script: |
      import json, os, sys
      path = "%s"
      runs = int(open(path).read()) + 1 if os.path.exists(path) else 1
      open(path, "w").write(str(runs))
      # Each run re-reads its source from the start, as a consumer without a cursor does.
      for n in range(1, runs + 2):
          print("OUTPUT: " + json.dumps({"n": n}), flush=True)
      sys.exit(1 if runs == 1 else 0)
  noop: { type: script, script: "true" }
tasks:
  consumer:
    flow:
      s: { action: emit }
  target:
    input:
      n: { type: integer }
    flow:
      s: { action: noop }
triggers:
  src:
    type: event_source
    task: consumer
    target_task: target
    dedup_key: "{{ payload.n }}"
    restart_policy: on_failure
    backoff_secs: 0.1
"""


async def test_a_consumer_replaying_its_output_after_a_restart_makes_no_second_job(
    tmp_path: Path, db_url: str
) -> None:
    """The first run emits n=1,2 and crashes; the restart emits n=1,2,3: three jobs."""
    async with running(tmp_path, db_url, REPLAYING % (tmp_path / "runs")) as rt:
        await rt.wait_for(lambda: _state_is(rt, "src", "idle"), what="the second run to end")
        jobs = await rt.jobs("target")
        state = await rt.state("src")
    assert (tmp_path / "runs").read_text() == "2"
    assert sorted(j.input["n"] for j in jobs) == [1, 2, 3]
    assert state["events_accepted"] == 3


async def _state_is(rt: Running, name: str, phase: str) -> bool:
    return (await rt.state(name))["state"] == phase


FAST_CONSUMER_SLOW_TARGET = """
actions:
  flood:
    type: script
    language: python
    script: |
      import json, sys
      for i in range({n}):
          print("OUTPUT: " + json.dumps({{"i": i}}), flush=True)
          print(f"wrote {{i}}", file=sys.stderr, flush=True)
  slow:
    type: script
    script: "sleep 0.05"
tasks:
  consumer:
    flow:
      poll: {{ action: flood }}
  work:
    input:
      i: {{ type: integer }}
    flow:
      s: {{ action: slow }}
triggers:
  flood:
    type: event_source
    task: consumer
    target_task: work
    max_in_flight: {limit}
    restart_policy: never
"""


async def test_max_in_flight_is_never_exceeded_and_nothing_is_lost(
    tmp_path: Path, db_url: str
) -> None:
    n, limit = 120, 5
    async with running(tmp_path, db_url, FAST_CONSUMER_SLOW_TARGET.format(n=n, limit=limit)) as rt:
        key = f"{rt.node.workspace().name}/flood"
        peak = 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            in_flight = await rt.node.store.count_in_flight(key)
            peak = max(peak, in_flight)
            assert in_flight <= limit
            done = await rt.jobs("work", status=JobStatus.COMPLETED)
            if len(done) == n:
                break
            await asyncio.sleep(0.01)
        jobs = await rt.jobs("work")
        assert sorted(j.input["i"] for j in jobs) == list(range(n))
        assert all(j.status is JobStatus.COMPLETED for j in jobs)
        assert peak == limit  # the limit was reached, so the reader really waited
        (consumer,) = await rt.jobs(source_type=CONSUMER_SOURCE_TYPE)
        # The consumer was blocked by the full pipe: it wrote its last lines long after
        # the first, though it writes as fast as it can.
        logs = await rt.node.store.get_logs(consumer.id, limit=10_000)
        wrote = [r for r in logs if r.line.startswith("wrote ")]
        assert len(wrote) == n


RESTARTING = """
actions:
  run:
    type: script
    script: |
      echo "run $(date +%s.%N)" >> {marks}
      exit {code}
  noop: {{ type: script, script: "true" }}
tasks:
  consumer:
    flow:
      s: {{ action: run }}
  target:
    flow:
      s: {{ action: noop }}
triggers:
  src:
    type: event_source
    task: consumer
    target_task: target
    restart_policy: {policy}
    backoff_secs: {backoff}
    max_crashes: {max_crashes}
    crash_window_secs: 60
"""


async def test_always_restarts_with_exponential_backoff(tmp_path: Path, db_url: str) -> None:
    marks = tmp_path / "marks"
    text = RESTARTING.format(marks=marks, code=1, policy="always", backoff=0.3, max_crashes=99)
    with capture_logs() as logs:
        async with running(tmp_path, db_url, text) as rt:
            await rt.wait_for(lambda: _runs(marks, 4), timeout=30, what="4 runs")
            times = _run_times(marks)
            # The 4th run can start before the manager has saved that it started it.
            state = await rt.wait_for(lambda: _restarts_recorded(rt, 3), what="3 restarts recorded")
    delays = [e["delay"] for e in logs if e["event"] == "event_source_backoff"]
    assert delays[:3] == pytest.approx([0.3, 0.6, 1.2])  # backoff 0.3 × 2^(n−1)
    # No restart comes before its backoff is over. How much later it comes depends on the
    # machine's load (bench/ measures that), so only this lower bound is asserted.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=False)), (gaps, delays)
    assert state["last_error"]


async def _restarts_recorded(rt: Running, n: int) -> dict[str, Any] | None:
    state = await rt.state("src")
    return state if state["restarts"] >= n else None


async def _phase_and_runs(rt: Running, marks: Path, phase: str, runs: int) -> bool:
    return (await rt.state("src"))["state"] == phase and len(_run_times(marks)) == runs


async def _runs(marks: Path, n: int) -> bool:
    return marks.exists() and len(marks.read_text().splitlines()) >= n


def _run_times(marks: Path) -> list[float]:
    return [float(line.split()[1]) for line in marks.read_text().splitlines()]


async def test_on_failure_clean_exit_stays_idle_across_restarts(
    tmp_path: Path, db_url: str
) -> None:
    marks = tmp_path / "marks"
    text = RESTARTING.format(marks=marks, code=0, policy="on_failure", backoff=0.1, max_crashes=5)
    async with running(tmp_path, db_url, text) as rt:
        await rt.wait_for(lambda: _state_is(rt, "src", "idle"), what="idle")
        state = await rt.state("src")
        assert "on_failure" in state["idle_reason"]
    assert len(marks.read_text().splitlines()) == 1
    # A new headwater process on the same store keeps it idle...
    async with running(tmp_path, db_url, text) as rt:
        await stays_true_for(
            lambda: _phase_and_runs(rt, marks, "idle", 1), 1.0, what="idle after one run"
        )
        # ...until an operator restarts it.
        await rt.node.restart_trigger("src")
        await rt.wait_for(lambda: _runs(marks, 2), what="a second run after restart")


async def test_never_runs_once(tmp_path: Path, db_url: str) -> None:
    marks = tmp_path / "marks"
    text = RESTARTING.format(marks=marks, code=1, policy="never", backoff=0.1, max_crashes=5)
    async with running(tmp_path, db_url, text) as rt:
        await rt.wait_for(lambda: _state_is(rt, "src", "idle"), what="idle")
        await stays_true_for(
            lambda: _phase_and_runs(rt, marks, "idle", 1), 0.5, what="idle after one run"
        )


async def test_crash_loop_quarantines_until_released(tmp_path: Path, db_url: str) -> None:
    marks = tmp_path / "marks"
    text = RESTARTING.format(marks=marks, code=2, policy="always", backoff=0, max_crashes=3)
    async with running(tmp_path, db_url, text) as rt:
        await rt.wait_for(lambda: _state_is(rt, "src", "quarantined"), what="quarantine")
        assert len(marks.read_text().splitlines()) == 3
        assert "crash loop" in (await rt.state("src"))["idle_reason"]
    async with running(tmp_path, db_url, text) as rt:
        await stays_true_for(  # the quarantine survives a restart
            lambda: _phase_and_runs(rt, marks, "quarantined", 3), 0.5, what="quarantined"
        )
        await rt.node.release_trigger("src")
        await rt.wait_for(lambda: _runs(marks, 4), what="a run after release")


async def test_disable_by_reload_stops_the_consumer(tmp_path: Path, db_url: str) -> None:
    text = """
    actions:
      forever: { type: script, script: "echo up; exec sleep 600" }
      noop: { type: script, script: "true" }
    tasks:
      consumer:
        flow:
          s: { action: forever }
      target:
        flow:
          s: { action: noop }
    triggers:
      src:
        type: event_source
        task: consumer
        target_task: target
        enabled: ENABLED
    """
    (tmp_path / "ws.yaml").write_text(textwrap.dedent(text.replace("ENABLED", "true")))
    async with running(tmp_path, db_url, "") as rt:
        await rt.wait_for(lambda: _state_is(rt, "src", "running"), what="running")
        (consumer,) = await rt.jobs(source_type=CONSUMER_SOURCE_TYPE)
        await rt.wait_for(lambda: _status(rt, consumer.id, JobStatus.RUNNING), what="started")
        rt.path.write_text(textwrap.dedent(text.replace("ENABLED", "false")))
        await rt.node.reload_workspace()
        await rt.wait_for(lambda: _state_is(rt, "src", "disabled"), what="disabled")
        job = await rt.node.store.get_job(consumer.id)
        assert job is not None and job.status is JobStatus.CANCELLED
        # Enabled again: a new consumer starts.
        rt.path.write_text(textwrap.dedent(text.replace("ENABLED", "true")))
        await rt.node.reload_workspace()
        await rt.wait_for(lambda: _state_is(rt, "src", "running"), what="running again")


async def _status(rt: Running, job_id: str, status: JobStatus) -> bool:
    job = await rt.node.store.get_job(job_id)
    return job is not None and job.status is status


async def test_multi_step_consumer_and_secret_env(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HW_TEST_QUEUE_URL", "https://queue.example/s3cr3t-value")
    text = """
    secrets:
      queue_url: "{{ env.HW_TEST_QUEUE_URL }}"
    actions:
      setup: { type: script, script: "echo setting up" }
      consume:
        type: script
        script: |
          echo "queue is $QUEUE_URL"
          echo 'OUTPUT: {"n": 1}'
          exit 1
      cleanup: { type: script, script: "echo cleaning up" }
      noop: { type: script, script: "true" }
    tasks:
      consumer:
        flow:
          setup: { action: setup }
          consume: { action: consume, depends_on: [setup] }
          cleanup: { action: cleanup, depends_on: [consume], continue_on_failure: true }
      target:
        flow:
          s: { action: noop }
    triggers:
      src:
        type: event_source
        task: consumer
        target_task: target
        env:
          QUEUE_URL: "{{ secret.queue_url }}"
        restart_policy: on_failure
        backoff_secs: 60
    """
    async with running(tmp_path, db_url, text) as rt:

        async def failed_once() -> bool:
            state = await rt.state("src")
            return state["state"] == "backoff" and state["last_error"] is not None

        await rt.wait_for(failed_once, what="backoff after the failure")
        (listed,) = await rt.jobs(source_type=CONSUMER_SOURCE_TYPE)
        consumer = await rt.node.store.get_job(listed.id)
        assert consumer is not None
        assert {s.name: s.status.value for s in consumer.steps} == {
            "setup": "completed",
            "consume": "failed",
            "cleanup": "completed",
        }
        logs = [r.line for r in await rt.node.store.get_logs(consumer.id)]
        assert "queue is ••••••" in logs
        assert not any("s3cr3t" in line for line in logs)
        assert len(await rt.jobs("target")) == 1


async def test_only_a_consumer_finishing_wakes_the_manager(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every job's finish is announced; the manager reconciles for its consumers' only
    # (at 1,000 jobs/s reconciling on each announcement took most of the event loop).
    workspace = CONSUMER.replace("restart_policy: never", "restart_policy: always")
    workspace = workspace.replace('print("done")', "import time; time.sleep(3600)")
    async with running(tmp_path, db_url, workspace) as r:
        manager = r.node.event_sources
        calls = 0
        reconcile = manager.reconcile

        async def counted() -> float:
            nonlocal calls
            calls += 1
            return await reconcile()

        monkeypatch.setattr(manager, "reconcile", counted)
        await r.wait_for(
            lambda: r.jobs("process-order", status=JobStatus.COMPLETED), what="target jobs"
        )
        before = calls
        outcomes = await r.node.store.insert_jobs(
            [NewJob("ws", "other", {}, "api", tags=frozenset({"nobody"})) for _ in range(10)]
        )
        for outcome in outcomes:  # ten announcements, one at a time
            assert await r.node.store.finish_job(outcome.id, None, JobStatus.CANCELLED)
            await stays_true_for(  # (one reconcile may be due anyway)
                lambda: calls - before <= 1, 0.05, what="no reconcile for a non-consumer job"
            )
        (consumer,) = await r.jobs("consumer")
        await r.node.store.request_cancel(consumer.id)
        await r.wait_for(
            lambda: _restarted(r, consumer.id), what="a restart after the consumer ended"
        )
        assert calls > before


async def _restarted(r: Running, old: str) -> bool:
    return any(j.id != old for j in await r.jobs("consumer"))
