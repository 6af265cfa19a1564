"""The job state machine and DAG rules, run for real (subprocess steps) on both stores."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from headwater.node import Node, NodeSettings
from headwater.store.base import JobStatus, StepStatus, StepUpdate
from headwater.worker.worker import WorkerSettings
from tests.polling import eventually


def process_alive(pid: int) -> bool:
    """A zombie (killed, not yet reaped by a PID 1 that may never reap) counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def write_workspace(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(text))
    return path


async def start_node(tmp_path: Path, db_url: str, text: str, **worker: float) -> Node:
    node = Node(
        write_workspace(tmp_path, text),
        NodeSettings(
            db_url=db_url,
            run_worker=False,
            kill_grace=1.0,
            worker=WorkerSettings(**worker),  # type: ignore[arg-type]
        ),
    )
    await node.start()
    return node


async def test_output_and_templates_flow_between_steps(tmp_path: Path, db_url: str) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          greet:
            type: script
            script: |
              echo "hello {{ input.name }}"
              echo 'OUTPUT: {"greeting": "hi {{ input.name }}", "n": 2}'
          shout:
            type: script
            language: python
            script: |
              import json, os
              data = json.loads(os.environ["HEADWATER_INPUT"])
              print("OUTPUT: " + json.dumps({"loud": data["text"].upper(), "twice": data["n"] * 2}))
        tasks:
          hello:
            input:
              name: { type: string, required: true }
            flow:
              greet:
                action: greet
                input:
                  name: "{{ input.name }}"
              shout:
                action: shout
                depends_on: [greet]
                input:
                  text: "{{ greet.output.greeting }}"
                  n: "{{ steps.greet.output.n }}"
        """,
    )
    try:
        job = await node.run_one("hello", {"name": "ada"})
        assert job.status is JobStatus.COMPLETED, job.error
        assert job.output == {
            "greet": {"greeting": "hi ada", "n": 2},
            "shout": {"loud": "HI ADA", "twice": 4},
        }
        logs = await node.store.get_logs(job.id)
        assert any(r.line == "hello ada" and r.step == "greet" for r in logs)
    finally:
        await node.close()


async def test_independent_steps_run_in_parallel_and_join(tmp_path: Path, db_url: str) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          nap: { type: script, script: "sleep 0.6" }
        tasks:
          fan:
            flow:
              a: { action: nap }
              b: { action: nap }
              c: { action: nap, depends_on: [a, b] }
        """,
    )
    try:
        job = await node.run_one("fan", {})
        assert job.status is JobStatus.COMPLETED
        steps = {s.name: s for s in job.steps}
        a, b, c = steps["a"], steps["b"], steps["c"]
        assert a.started_at and b.started_at and a.finished_at and b.finished_at and c.started_at
        # a and b overlap in time; c starts only after both finished.
        assert a.started_at < b.finished_at and b.started_at < a.finished_at
        assert c.started_at >= max(a.finished_at, b.finished_at)
    finally:
        await node.close()


async def test_failure_skips_dependents_unless_continue_on_failure(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          boom: { type: script, script: "echo broken >&2; exit 3" }
          ok: { type: script, script: "echo ok" }
        tasks:
          t:
            flow:
              first: { action: boom }
              dependent: { action: ok, depends_on: [first] }
              grandchild: { action: ok, depends_on: [dependent] }
              cleanup: { action: ok, depends_on: [first], continue_on_failure: true }
        """,
    )
    try:
        job = await node.run_one("t", {})
        assert job.status is JobStatus.FAILED
        assert job.error is not None and "first" in job.error and "exit code 3" in job.error
        steps = {s.name: s for s in job.steps}
        assert steps["first"].status is StepStatus.FAILED
        assert steps["first"].exit_code == 3
        assert steps["dependent"].status is StepStatus.SKIPPED
        assert "dependency 'first' failed" in (steps["dependent"].error or "")
        assert steps["grandchild"].status is StepStatus.SKIPPED
        assert steps["cleanup"].status is StepStatus.COMPLETED
        logs = await node.store.get_logs(job.id, step="first")
        assert any(r.line == "broken" and r.stream.value == "stderr" for r in logs)
    finally:
        await node.close()


async def test_when_false_skips_and_a_join_after_it_still_runs(tmp_path: Path, db_url: str) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          ok: { type: script, script: "echo ok" }
        tasks:
          t:
            input:
              env: { type: string, default: staging }
            flow:
              setup: { action: ok }
              deploy: { action: ok, depends_on: [setup], when: "{{ input.env == 'production' }}" }
              notify: { action: ok, depends_on: [setup, deploy] }
        """,
    )
    try:
        job = await node.run_one("t", {})
        steps = {s.name: s for s in job.steps}
        assert job.status is JobStatus.COMPLETED
        assert steps["deploy"].status is StepStatus.SKIPPED
        assert steps["notify"].status is StepStatus.COMPLETED
        job = await node.run_one("t", {"env": "production"})
        assert {s.name: s.status for s in job.steps}["deploy"] is StepStatus.COMPLETED
    finally:
        await node.close()


async def test_retry_reruns_a_failed_step_with_backoff(tmp_path: Path, db_url: str) -> None:
    counter = tmp_path / "count"
    node = await start_node(
        tmp_path,
        db_url,
        f"""
        actions:
          flaky:
            type: script
            script: |
              n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}
              [ "$n" -ge 3 ] || exit 1
              echo 'OUTPUT: {{"tries": '$n'}}'
        tasks:
          t:
            flow:
              s: {{ action: flaky, retry: {{ count: 3, backoff: 0.05 }} }}
        """,
    )
    try:
        job = await node.run_one("t", {})
        assert job.status is JobStatus.COMPLETED
        (step,) = job.steps
        assert step.attempts == 3
        assert step.output == {"tries": 3}
        logs = await node.store.get_logs(job.id)
        assert sum("retry" in r.line for r in logs if r.stream.value == "system") == 2
    finally:
        await node.close()


async def test_step_timeout_kills_the_process_group(tmp_path: Path, db_url: str) -> None:
    pidfile = tmp_path / "pid"
    node = await start_node(
        tmp_path,
        db_url,
        f"""
        actions:
          hang:
            type: script
            script: |
              sleep 60 &
              echo $! > {pidfile}
              wait
        tasks:
          t:
            flow:
              s: {{ action: hang, timeout: 1s }}
              after: {{ action: hang, depends_on: [s] }}
        """,
    )
    try:
        job = await node.run_one("t", {})
        assert job.status is JobStatus.FAILED
        steps = {s.name: s for s in job.steps}
        assert steps["s"].status is StepStatus.FAILED
        assert "timed out" in (steps["s"].error or "")
        assert steps["after"].status is StepStatus.SKIPPED
        grandchild = int(pidfile.read_text())
        await eventually(lambda: not process_alive(grandchild), 5, what="the grandchild killed")
    finally:
        await node.close()


async def test_task_timeout_fails_the_job(tmp_path: Path, db_url: str) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          hang: { type: script, script: "sleep 60" }
        tasks:
          t:
            timeout: 1
            flow:
              s: { action: hang }
        """,
    )
    try:
        job = await node.run_one("t", {})
        assert job.status is JobStatus.FAILED
        assert job.error == "task timed out after 1s"
        assert job.steps[0].error == "task timed out after 1s"
    finally:
        await node.close()


async def test_cancel_a_running_job_stops_its_process(tmp_path: Path, db_url: str) -> None:
    pidfile = tmp_path / "pid"
    node = await start_node(
        tmp_path,
        db_url,
        f"""
        actions:
          hang: {{ type: script, script: "echo $$ > {pidfile}; exec sleep 60" }}
        tasks:
          t:
            flow:
              s: {{ action: hang }}
        """,
    )
    try:
        run = asyncio.create_task(node.run_one("t", {}))
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            await asyncio.sleep(0.05)
        (job,) = await node.store.list_jobs(_flt())
        await node.store.request_cancel(job.id)
        done = await asyncio.wait_for(run, 15)
        assert done.status is JobStatus.CANCELLED
        assert done.steps[0].status is StepStatus.CANCELLED
        assert not process_alive(int(pidfile.read_text()))
    finally:
        await node.close()


async def test_sub_task_step_runs_a_child_job(tmp_path: Path, db_url: str) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          double:
            type: script
            script: "echo 'OUTPUT: {\\"v\\": '$(( {{ input.v }} * 2 ))'}'"
          call-child: { type: task, task: child }
        tasks:
          child:
            input: { v: { type: integer } }
            flow:
              d: { action: double, input: { v: "{{ input.v }}" } }
          parent:
            flow:
              c: { action: call-child, input: { v: 21 } }
        """,
    )
    try:
        job = await node.run_one("parent", {})
        assert job.status is JobStatus.COMPLETED, job.error
        assert job.output == {"c": {"d": {"v": 42}}}
        children = await node.store.list_jobs(_flt(parent_job_id=job.id))
        assert [c.task for c in children] == ["child"]
        assert children[0].source_type == "task"
    finally:
        await node.close()


async def test_function_action_runs_in_process(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "hw_funcs_engine.py").write_text(
        textwrap.dedent(
            """
            async def add(a, b):
                return {"sum": a + b}

            def fail(**kwargs):
                raise ValueError("no good")
            """
        )
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          add: { type: function, function: "hw_funcs_engine:add" }
          fail: { type: function, function: "hw_funcs_engine:fail" }
        tasks:
          ok:
            flow:
              s: { action: add, input: { a: 2, b: 3 } }
          bad:
            flow:
              s: { action: fail }
        """,
    )
    try:
        job = await node.run_one("ok", {})
        assert job.status is JobStatus.COMPLETED
        assert job.output == {"s": {"sum": 5}}
        job = await node.run_one("bad", {})
        assert job.status is JobStatus.FAILED
        assert "ValueError: no good" in (job.error or "")
        logs = await node.store.get_logs(job.id)
        assert any("Traceback" in r.line for r in logs)
    finally:
        sys.path.remove(str(tmp_path))
        await node.close()


async def test_recovery_requeues_a_job_whose_worker_is_gone(tmp_path: Path, db_url: str) -> None:
    node = await start_node(
        tmp_path,
        db_url,
        """
        actions:
          ok: { type: script, script: "echo 'OUTPUT: {\\"done\\": true}'" }
        tasks:
          t:
            flow:
              s: { action: ok }
        """,
        stale_after=0.5,
        recovery_interval=0.2,
    )
    try:
        outcome = await node.submit("t", {})
        # A worker that claims the job and dies without a trace.
        claimed = await node.store.claim_jobs("dead-worker", node.holder.tag_signatures(), 1)
        assert [j.id for j in claimed] == [outcome.id]
        stop = asyncio.Event()
        assert node.settings.worker.stale_after == 0.5
        worker_node = Node(
            node.holder.path, NodeSettings(db_url=node.settings.db_url, worker=node.settings.worker)
        )
        await worker_node.start()
        run = asyncio.create_task(worker_node.run_worker(stop))
        try:
            for _ in range(200):
                job = await node.store.get_job(outcome.id)
                assert job is not None
                if job.status.is_terminal:
                    break
                await asyncio.sleep(0.05)
            assert job.status is JobStatus.COMPLETED
            assert job.attempt == 2
        finally:
            stop.set()
            await run
            await worker_node.close()
    finally:
        await node.close()


def _flt(**kw: object) -> object:
    from headwater.store.base import JobFilter

    return JobFilter(**kw)  # type: ignore[arg-type]


async def test_a_long_step_is_shown_running_and_a_short_one_is_written_once(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "started"
    node = await start_node(
        tmp_path,
        db_url,
        f"""
        actions:
          quick: {{ type: script, script: "true" }}
          slow: {{ type: script, script: "touch {marker}; sleep 1" }}
        tasks:
          t:
            flow:
              quick: {{ action: quick }}
              slow: {{ action: slow, depends_on: [quick] }}
        """,
    )
    writes: list[tuple[str, str]] = []
    upsert = node.store.upsert_steps

    async def recording(job_id: str, steps: Sequence[StepUpdate]) -> None:
        writes.extend((s.name, s.status.value) for s in steps)
        await upsert(job_id, steps)

    monkeypatch.setattr(node.store, "upsert_steps", recording)
    try:
        run = asyncio.create_task(node.run_one("t", {}))
        for _ in range(100):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # past the running record's delay
        (job,) = await node.store.list_jobs(_flt())
        got = await node.store.get_job(job.id)
        assert got is not None
        states = {s.name: s.status for s in got.steps}
        assert states == {"quick": StepStatus.COMPLETED, "slow": StepStatus.RUNNING}
        done = await asyncio.wait_for(run, 15)
        assert done.status is JobStatus.COMPLETED
        assert [s.status for s in done.steps] == [StepStatus.COMPLETED] * 2
        # quick ended before its running record was due: one write, its final state;
        # slow was shown running, and its final state went with the job's finish.
        assert writes == [("quick", "completed"), ("slow", "running")]
    finally:
        await node.close()
