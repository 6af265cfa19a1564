"""Several workspaces in one node, cross-workspace actions, and steps matched to worker
tags (a job handed on between workers), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from headwater.distributed.tokens import WorkerTokenVerifier, issue_token
from headwater.node import Node, NodeSettings
from headwater.server.app import create_app
from headwater.server.routes_worker import create_worker_router
from headwater.server.worker_service import WorkerService, WorkerServiceSettings
from headwater.store.base import JobRecord, JobStatus, StepStatus
from headwater.worker.worker import WorkerSettings
from tests.integration.test_distributed import Cluster, _free_port, _until
from tests.polling import eventually, stays_true_for

A = """
actions:
  hello:
    type: script
    script: |
      echo 'OUTPUT: {"who": "a"}'
tasks:
  greet:
    flow:
      one: { action: hello }
      two:
        action: jobs.shout
        depends_on: [one]
        input:
          text: "{{ one.output.who }}"
"""

JOBS = """
secrets:
  token: "jobs-secret-value"
actions:
  shout:
    type: script
    source: shout.sh
    env:
      TEXT: "{{ input.text }}"
      TOKEN: "{{ secret.token }}"
tasks:
  greet:
    flow:
      only:
        action: shout
        input: { text: bee }
"""

SHOUT = """\
test "$TOKEN" = "jobs-secret-value" || { echo "wrong secret" >&2; exit 3; }
printf 'OUTPUT: {"loud": "%s", "cwd": "%s"}\\n' "$(echo "$TEXT" | tr a-z A-Z)" "$(pwd)"
"""


def write_two(tmp_path: Path) -> Path:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "main.yaml").write_text(textwrap.dedent(A))
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "main.yaml").write_text(textwrap.dedent(JOBS))
    (tmp_path / "jobs" / "shout.sh").write_text(SHOUT)
    config = tmp_path / "server.yaml"
    config.write_text(
        "workspaces:\n  a: { type: folder, path: ./a }\n  jobs: { type: folder, path: ./jobs }\n"
    )
    return config


async def test_a_step_runs_another_workspaces_action_in_its_owners_context(
    tmp_path: Path, db_url: str
) -> None:
    node = Node(write_two(tmp_path), NodeSettings(db_url=db_url, run_worker=False))
    await node.start()
    try:
        job = await node.run_one("greet", {})
        assert job.status is JobStatus.COMPLETED, job.error
        assert (job.workspace, job.task) == ("a", "greet")
        # The caller rendered the input; the owner's secret and folder ran the body.
        assert job.output["two"]["loud"] == "A"
        assert Path(job.output["two"]["cwd"]).resolve() == (tmp_path / "jobs").resolve()

        other = await node.run_one("jobs/greet", {})
        assert other.status is JobStatus.COMPLETED, other.error
        assert (other.workspace, other.task) == ("jobs", "jobs/greet")
        assert other.output == {"only": {"loud": "BEE", "cwd": other.output["only"]["cwd"]}}

        # The first workspace's tasks answer to `<workspace>/<task>` too.
        aliased = await node.run_one("a/greet", {})
        assert (aliased.task, aliased.status) == ("greet", JobStatus.COMPLETED)
    finally:
        await node.close()


TAGGED = """
actions:
  where:
    type: script
    script: |
      echo "OUTPUT: {\\"host\\": \\"$HOST_NAME\\"}"
tasks:
  train:
    flow:
      prepare: { action: where }
      fit: { action: where, depends_on: [prepare], tags: [gpu] }
      report: { action: where, depends_on: [fit] }
"""


async def test_a_step_tagged_for_a_missing_worker_waits_visibly_then_runs_elsewhere(
    tmp_path: Path, db_url: str
) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(TAGGED))
    fast = WorkerSettings(safety_wakeup=0.3, heartbeat_interval=0.3)
    plain = Node(path, NodeSettings(db_url=db_url, worker=fast))
    await plain.start()
    stop = asyncio.Event()
    running = [asyncio.create_task(plain.run_worker(stop))]
    gpu: Node | None = None
    try:
        job_id = (await plain.submit("train", {})).id

        async def waiting() -> bool:
            job = await plain.store.get_job(job_id)
            assert job is not None
            return job.status is JobStatus.PENDING and bool(job.steps)

        await eventually(waiting, timeout=30, what="the job handed on")
        job = await plain.store.get_job(job_id)
        assert job is not None
        assert job.error == "waiting for a worker with the tags gpu, script (step 'fit')"
        assert job.tags == frozenset({"gpu", "script"})
        assert {s.name: s.status for s in job.steps} == {"prepare": StepStatus.COMPLETED}
        assert job.attempt == 0  # handing on is not an attempt

        # A worker with the tag takes it over and resumes after `prepare`.
        gpu = Node(path, NodeSettings(db_url=db_url, worker=fast, worker_tags=frozenset({"gpu"})))
        await gpu.start()
        running.append(asyncio.create_task(gpu.run_worker(stop)))

        async def done() -> bool:
            found = await plain.store.get_job(job_id)
            return found is not None and found.status.is_terminal

        await eventually(done, timeout=30, what="the job finished")
        final = await plain.store.get_job(job_id)
        assert final is not None
        assert final.status is JobStatus.COMPLETED, final.error
        assert final.error is None
        steps = {s.name: s for s in final.steps}
        assert all(s.attempts == 1 for s in steps.values())  # prepare did not run again
        assert gpu.worker is not None and final.worker_id == gpu.worker.id
    finally:
        stop.set()
        await asyncio.gather(*running, return_exceptions=True)
        await plain.close()
        if gpu is not None:
            await gpu.close()


async def test_untagged_jobs_run_on_the_embedded_worker_as_before(
    tmp_path: Path, db_url: str
) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(
        textwrap.dedent(
            """
            actions:
              ok: { type: script, script: "echo 'OUTPUT: {\\"ok\\": true}'" }
            tasks:
              t:
                flow:
                  a: { action: ok }
                  b: { action: ok, depends_on: [a] }
            """
        )
    )
    node = Node(path, NodeSettings(db_url=db_url, run_worker=False))
    await node.start()
    try:
        job = await node.run_one("t", {})
        assert job.status is JobStatus.COMPLETED and job.attempt == 1
    finally:
        await node.close()


# -- distributed: remote workers over HTTP, each step on a worker with its tags -----------

ACROSS = """
actions:
  where:
    type: script
    script: |
      echo 'OUTPUT: {"ok": true}'
tasks:
  build:
    flow:
      compile: { action: where, tags: [x86] }
      port: { action: where, depends_on: [compile], tags: [arm] }
      package: { action: where, depends_on: [port], tags: [x86] }
"""


@pytest.fixture
async def across(db_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(ACROSS))
    node = Node(path, NodeSettings(db_url=db_url, run_worker=False, kill_grace=0.5))
    await node.start()
    service = WorkerService(node, WorkerServiceSettings(stale_after=2.0, orphan_grace=0.5))
    issued = issue_token("test")
    await node.store.insert_worker_token(issued.record)
    app = create_app(node)
    app.include_router(
        create_worker_router(service, WorkerTokenVerifier(node.store, cache_secs=0.2))
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    await _until(lambda: server.started, what="uvicorn")
    try:
        yield Cluster(node, service, f"http://127.0.0.1:{port}", issued.token, tmp_path)
    finally:
        service.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
        await node.close()


async def test_one_job_runs_across_two_remote_workers_by_step_tags(across: Cluster) -> None:
    async with (
        across.remote_worker(frozenset({"script", "x86"})) as intel,
        across.remote_worker(frozenset({"script", "arm"})) as arm,
    ):
        job_id = await across.submit("build")
        job = await across.wait_job(job_id, timeout=60)
        assert job.status is JobStatus.COMPLETED, job.error
        logs = [r.line for r in await across.store.get_logs(job_id)]
        handed = [line for line in logs if line.startswith("waiting for a worker")]
        # x86 → arm → x86: two hand-overs, each saying what the job waited for.
        assert handed == [
            "waiting for a worker with the tags arm, script (step 'port')",
            "waiting for a worker with the tags script, x86 (step 'package')",
        ]
        assert intel.worker is not None and arm.worker is not None
        assert job.worker_id == intel.worker.id  # the last step's worker finished it
        assert {s.name: (s.status, s.attempts) for s in job.steps} == {
            "compile": (StepStatus.COMPLETED, 1),
            "port": (StepStatus.COMPLETED, 1),
            "package": (StepStatus.COMPLETED, 1),
        }
        assert job.attempt == 1


async def test_a_step_no_remote_worker_can_run_keeps_its_job_waiting(across: Cluster) -> None:
    async with across.remote_worker(frozenset({"script", "x86"})):
        job_id = await across.submit("build")

        async def handed_on() -> JobRecord | None:
            job = await across.store.get_job(job_id)
            return (
                job if job is not None and job.status is JobStatus.PENDING and job.steps else None
            )

        job = await _until(handed_on, timeout=30, what="the hand-over")
        assert job.error == "waiting for a worker with the tags arm, script (step 'port')"
        await stays_true_for(handed_on, 1.0, what="the job waiting")
        async with httpx.AsyncClient(base_url=across.url) as client:
            body = (await client.get(f"/api/jobs/{job_id}")).json()
        assert body["status"] == "pending"
        assert "arm" in body["waiting_for"]
