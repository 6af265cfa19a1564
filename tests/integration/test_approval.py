"""Approval steps (Strøm's `type: approval`): the job waits durably, holding no worker,
until someone approves or rejects it, or its timeout passes; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from headwater.engine.approval import decide
from headwater.errors import ConflictError
from headwater.node import Node, NodeSettings
from headwater.server.json_shapes import job_json
from headwater.store.base import JobFilter, JobRecord, JobStatus, StepStatus
from headwater.worker.worker import WorkerSettings
from tests.integration.test_engine import write_workspace
from tests.polling import eventually

WORKSPACE = """
actions:
  gate:
    type: approval
    message: "Deploy {{ input.version }} to {{ input.env }}?"
    input:
      ticket: { type: string, required: true }
  write:
    type: script
    language: python
    script: |
      import os
      with open("{{ input.path }}", "a") as f:
          f.write(os.environ["HEADWATER_INPUT"] + "\\n")
tasks:
  deploy:
    input:
      version: { type: string }
      out: { type: string }
    on_suspended:
      - action: write
        input:
          path: "{{ input.out }}/suspended.txt"
          said: "{{ hook.step_name }}: {{ hook.message }} ({{ hook.status }})"
    flow:
      build:
        action: write
        input: { path: "{{ input.out }}/build.txt" }
      approve:
        action: gate
        depends_on: [build]
        input:
          version: "{{ input.version }}"
          env: prod
      ship:
        action: write
        depends_on: [approve]
        input:
          path: "{{ input.out }}/ship.txt"
          by: "{{ approve.output.approved_by }}"
          ticket: "{{ approve.output.input.ticket }}"
  quick:
    input:
      out: { type: string }
    flow:
      wait:
        type: approval
        message: "ok?"
        timeout: 1s
      after:
        action: write
        depends_on: [wait]
        input: { path: "{{ input.out }}/after.txt" }
      anyway:
        action: write
        depends_on: [wait]
        continue_on_failure: true
        input: { path: "{{ input.out }}/anyway.txt" }
"""


@asynccontextmanager
async def running_node(tmp_path: Path, db_url: str, concurrency: int = 1) -> AsyncIterator[Node]:
    node = Node(
        write_workspace(tmp_path, WORKSPACE),
        NodeSettings(
            db_url=db_url,
            kill_grace=1.0,
            worker=WorkerSettings(concurrency=concurrency, recovery_interval=0.2),
        ),
    )
    await node.start()
    stop = asyncio.Event()
    run = asyncio.create_task(node.run_worker(stop))
    try:
        yield node
    finally:
        stop.set()
        await run
        await node.close()


async def job_of(node: Node, job_id: str) -> JobRecord:
    job = await node.store.get_job(job_id)
    assert job is not None
    return job


def step(job: JobRecord, name: str) -> StepStatus | None:
    return next((s.status for s in job.steps if s.name == name), None)


async def suspended(node: Node, job_id: str) -> JobRecord | None:
    job = await job_of(node, job_id)
    return job if job.suspended and step(job, "approve") is StepStatus.SUSPENDED else None


async def test_approve_resumes_the_flow_with_the_approvers_input(
    tmp_path: Path, db_url: str
) -> None:
    async with running_node(tmp_path, db_url) as node:
        outcome = await node.submit("deploy", {"version": "1.2", "out": str(tmp_path)})
        job = await eventually(lambda: suspended(node, outcome.id), 30, what="suspension")
        # It waits without a worker: the message is rendered, nothing after it ran.
        assert job.status is JobStatus.RUNNING and job.worker_id is None
        (approve,) = [s for s in job.steps if s.name == "approve"]
        assert approve.output == {"approval_message": "Deploy 1.2 to prod?"}
        assert not (tmp_path / "ship.txt").exists()
        assert job_json(job)["suspended"] is True
        # The slot is free: another job runs meanwhile on this one-slot worker.
        (tmp_path / "x").mkdir()
        other = await node.submit("deploy", {"version": "2", "out": str(tmp_path / "x")})
        await eventually(lambda: suspended(node, other.id), 30, what="second suspension")
        # on_suspended hook, with the step and the message.
        await eventually(lambda: (tmp_path / "suspended.txt").exists(), 30, what="hook")
        said = json.loads((tmp_path / "suspended.txt").read_text().splitlines()[0])["said"]
        assert said == "approve: Deploy 1.2 to prod? (suspended)"

        # The action's input schema is the approver's form: a required field is enforced.
        with pytest.raises(Exception, match="ticket"):
            await decide(
                node.store, node.workspace(), outcome.id, "approve", approved=True, approver="x"
            )
        await decide(
            node.store,
            node.workspace(),
            outcome.id,
            "approve",
            approved=True,
            approver="alice",
            given={"ticket": "OPS-7"},
        )
        done = await eventually(
            lambda: _final(node, outcome.id), 30, what="the job to finish after approval"
        )
        assert done.status is JobStatus.COMPLETED, done.error
        shipped = json.loads((tmp_path / "ship.txt").read_text())
        assert shipped["by"] == "alice" and shipped["ticket"] == "OPS-7"
        assert len((tmp_path / "build.txt").read_text().splitlines()) == 1  # not run again
        with pytest.raises(ConflictError):
            await decide(node.store, None, outcome.id, "approve", approved=False, approver="x")


async def _final(node: Node, job_id: str) -> JobRecord | None:
    job = await job_of(node, job_id)
    return job if job.status.is_terminal else None


async def test_reject_fails_the_step_and_skips_its_dependents(tmp_path: Path, db_url: str) -> None:
    async with running_node(tmp_path, db_url) as node:
        outcome = await node.submit("deploy", {"version": "1", "out": str(tmp_path)})
        await eventually(lambda: suspended(node, outcome.id), 30, what="suspension")
        await decide(
            node.store, None, outcome.id, "approve", approved=False, approver="bob", reason="no"
        )
        done = await eventually(lambda: _final(node, outcome.id), 30, what="the job to fail")
        assert done.status is JobStatus.FAILED
        assert step(done, "approve") is StepStatus.FAILED
        assert step(done, "ship") is StepStatus.SKIPPED
        assert "rejected by bob: no" in (done.error or "")


async def test_timeout_fails_the_step_and_continue_on_failure_runs(
    tmp_path: Path, db_url: str
) -> None:
    async with running_node(tmp_path, db_url) as node:
        outcome = await node.submit("quick", {"out": str(tmp_path)})
        done = await eventually(lambda: _final(node, outcome.id), 30, what="the timeout")
        assert done.status is JobStatus.FAILED
        wait = next(s for s in done.steps if s.name == "wait")
        assert wait.status is StepStatus.FAILED and "timed out" in (wait.error or "")
        assert step(done, "after") is StepStatus.SKIPPED
        assert (tmp_path / "anyway.txt").exists()


async def test_the_wait_survives_a_restart_and_cancel_ends_it(tmp_path: Path, db_url: str) -> None:
    async with running_node(tmp_path, db_url) as node:
        outcome = await node.submit("deploy", {"version": "3", "out": str(tmp_path)})
        await eventually(lambda: suspended(node, outcome.id), 30, what="suspension")
        (tmp_path / "c").mkdir()
        cancelled = await node.submit("deploy", {"version": "4", "out": str(tmp_path / "c")})
        await eventually(lambda: suspended(node, cancelled.id), 30, what="suspension")
    # A new process (the old one closed): the job still waits, untouched by recovery.
    async with running_node(tmp_path, db_url) as node:
        await asyncio.sleep(0)  # the node's recovery loop starts
        job = await eventually(lambda: suspended(node, outcome.id), 5, what="still suspended")
        assert job.attempt == 0  # a pause is not a (crashed) attempt
        record = await node.store.request_cancel(cancelled.id)
        assert record.status is JobStatus.CANCELLED
        assert step(record, "approve") is StepStatus.CANCELLED
        await decide(
            node.store,
            node.workspace(),
            outcome.id,
            "approve",
            approved=True,
            approver="carol",
            given={"ticket": "T"},
        )
        done = await eventually(lambda: _final(node, outcome.id), 30, what="resume")
        assert done.status is JobStatus.COMPLETED, done.error
        jobs = await node.store.list_jobs(JobFilter(task="deploy"))
        assert {j.status for j in jobs} == {JobStatus.COMPLETED, JobStatus.CANCELLED}
