"""A remote worker's artifacts and task state go to its server over HTTP (SQLite and
PostgreSQL): the server keeps and serves them as it does a local step's."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from headwater.artifacts import ArtifactStore
from headwater.distributed.tokens import WorkerTokenVerifier, issue_token
from headwater.node import Node, NodeSettings
from headwater.server.app import create_app
from headwater.server.routes_worker import create_worker_router
from headwater.server.worker_service import WorkerService, WorkerServiceSettings
from headwater.store.base import JobStatus
from tests.integration.test_distributed import Cluster, _free_port, _until

WORKSPACE = """
actions:
  report:
    type: script
    script: |
      mkdir -p "$ARTIFACTS_DIR/deep"
      echo "<p>hi</p>" > "$ARTIFACTS_DIR/report.html"
      echo "{{ state.runs | default(value=0) }}" > "$ARTIFACTS_DIR/deep/runs.txt"
      cat "$STATE_DIR/seen.txt" 2>/dev/null || echo none
      echo "seen" > "$STATE_OUT_DIR/seen.txt"
      echo "STATE: {\\"runs\\": $(( {{ state.runs | default(value=0) }} + 1 ))}"
  big:
    type: script
    script: head -c 5000 /dev/zero > "$ARTIFACTS_DIR/big.bin"
tasks:
  report:
    flow:
      make: { action: report }
  big:
    flow:
      make: { action: big }
"""


@pytest.fixture
async def cluster(db_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(WORKSPACE))
    settings = NodeSettings(
        db_url=db_url, run_worker=False, kill_grace=0.5, artifacts_dir=tmp_path / "kept"
    )
    node = Node(path, settings)
    assert node.artifacts is not None
    node.artifacts.max_file_bytes = 1000  # for the oversized case
    await node.start()
    service = WorkerService(node, WorkerServiceSettings(stale_after=1.0, orphan_grace=0.5))
    issued = issue_token("test")
    await node.store.insert_worker_token(issued.record)
    app = create_app(node)
    verifier = WorkerTokenVerifier(node.store, cache_secs=0.2)
    app.include_router(create_worker_router(service, verifier, node.artifacts))
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


async def test_a_remote_steps_artifacts_and_state_are_kept_by_the_server(
    cluster: Cluster,
) -> None:
    async with cluster.remote_worker():
        first = await cluster.wait_job(await cluster.submit("report"))
        assert first.status is JobStatus.COMPLETED, first.error
        second = await cluster.wait_job(await cluster.submit("report"))
        assert second.status is JobStatus.COMPLETED, second.error
    async with httpx.AsyncClient(base_url=cluster.url) as client:
        listed = (await client.get(f"/api/jobs/{second.id}/artifacts")).json()
        assert sorted(a["name"] for a in listed) == ["deep/runs.txt", "report.html"]
        runs = next(a for a in listed if a["name"] == "deep/runs.txt")
        assert runs["step_name"] == "make"
        # the second run read the first one's state (from the server, over HTTP)
        assert (await client.get(runs["url"])).text == "1\n"
        state = (await client.get("/api/tasks/report/state")).json()
    assert state["state"] == {"runs": 2}
    assert state["files"] == ["seen.txt"]
    logs = [r.line for r in await cluster.store.get_logs(second.id)]
    assert "seen" in logs  # $STATE_DIR held the first run's file


async def test_artifacts_the_server_refuses_fail_the_step_with_its_reason(
    cluster: Cluster,
) -> None:
    async with cluster.remote_worker():
        job = await cluster.wait_job(await cluster.submit("big"))
    assert job.status is JobStatus.FAILED
    (step,) = job.steps
    assert step.error is not None
    assert "artifacts not kept" in step.error and "1000-byte limit" in step.error
    assert ArtifactStore(cluster.tmp / "kept").artifacts_of(job.id) == []


async def test_a_token_uploads_artifacts_only_for_its_own_workers_jobs(
    cluster: Cluster,
) -> None:
    job_id = await cluster.submit("report")  # pending: no worker of this token took it
    async with httpx.AsyncClient(base_url=cluster.url) as client:
        answer = await client.post(
            f"/worker/artifacts/{job_id}/make",
            content=b"not even a tarball",
            headers={"Authorization": f"Bearer {cluster.token}"},
        )
    assert answer.status_code == 404
