"""A durable workflow on a remote worker survives ``kill -9`` of that worker: ``headwater
server`` (no worker of its own) and two ``headwater worker`` processes, SQLite and
PostgreSQL. The workflow sleeps (the server wakes it), then the worker running it dies
inside its second step, before that step's side effect; the other worker gets the job
once recovery requeues it, replays the first step and the sleep from their records and
runs the rest. Each step's side effect happened exactly once and the workflow completed
once. Sized to seconds (most of it is starting the processes)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest

from headwater.distributed.tokens import issue_token
from headwater.store.sql import open_store
from tests.e2e.cluster import RemoteWorkerProc, Server, wait_for
from tests.integration import remote_workflow_app as app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("crash")]

# Recovery requeues the dead worker's job after this long without a heartbeat (workers
# beat every 0.3 s); more than the 2 s of tests/e2e/cluster.py so that a live worker on
# a loaded machine is not taken for dead.
STALE_AFTER = 3.0


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def _token(db_url: str) -> str:
    """A worker token (what ``headwater worker-tokens create`` does; migrates the db)."""
    store = await open_store(db_url)
    try:
        issued = issue_token("crash")
        await store.insert_worker_token(issued.record)
    finally:
        await store.close()
    return issued.token


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_remote_workflow_resumes_on_another_worker_after_kill_9(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db_url = (
        str(request.getfixturevalue("pg_url"))
        if backend == "postgres"
        else f"sqlite:///{tmp_path}/hw.db"
    )
    folder = tmp_path / "ws"
    folder.mkdir()
    shutil.copy(Path(app.__file__), folder / "rwf_crash.py")
    workspace = folder / "ws.yaml"
    workspace.write_text(app.workspace_yaml("rwf_crash"))
    log, gate = tmp_path / "effects.log", tmp_path / "gate"
    started = Path(f"{log}.started")
    t0 = time.monotonic()
    token = asyncio.run(_token(db_url))
    server = Server("server", workspace, db_url, tmp_path, stale_after=STALE_AFTER, wait=False)
    # Both workers start with the server (they retry until it answers).
    workers = [
        RemoteWorkerProc(name, [server.url], token, tmp_path, concurrency=2)
        for name in ("worker1", "worker2")
    ]
    try:
        server.wait_healthy()
        healthy = time.monotonic() - t0
        with httpx.Client(base_url=server.url, timeout=10) as client:
            resp = client.post(
                "/api/tasks/chain/run", json={"input": {"log": str(log), "gate": str(gate)}}
            )
            assert resp.status_code == 201, resp.text
            job_id = resp.json()["job_id"]
            wait_for(lambda: _lines(started), 60, "the second step to start")
            pid = int(_lines(started)[0].split(":")[1])
            (victim,) = [w for w in workers if w.proc is not None and w.proc.pid == pid]
            victim.kill()  # SIGKILL inside step two, before its side effect
            killed = time.monotonic()
            at_kill = killed - t0
            gate.touch()

            def ended() -> dict[str, object] | None:
                job: dict[str, object] = client.get(f"/api/jobs/{job_id}").json()
                return job if job["status"] in ("completed", "failed", "cancelled") else None

            job = wait_for(ended, 60, "the workflow to end", interval=0.1)
            print(
                f"server up {healthy:.1f}s, kill at {at_kill:.1f}s, resumed and completed"
                f" {time.monotonic() - killed:.1f}s after it"
            )
            workflow = client.get(f"/api/workflows/{job_id}").json()
            runs = client.get("/api/jobs", params={"task": "chain"}).json()
    finally:
        for proc in (*workers, server):
            proc.kill()
    assert job["status"] == "completed", (job["error"], server.output())
    assert job["output"] == {"workflow": ["one", "two", "three"]}
    assert sorted(_lines(log)) == ["one", "three", "two"]  # each side effect once
    # Step two ran again, in the other worker; step one did not (its record was replayed).
    (first, second) = [line.split(":") for line in _lines(started)]
    assert first[0] == second[0] == "two" and first[1] == str(pid) != second[1]
    assert [(s["seq"], s["name"], s["status"]) for s in workflow["workflow_steps"]] == [
        (0, "effect", "completed"),
        (1, "sleep", "completed"),  # woken by the server's timers (no embedded worker)
        (2, "gated", "completed"),
        (3, "effect", "completed"),
    ]
    assert [j["id"] for j in runs["jobs"]] == [job_id]  # one run, completed once
    assert int(str(job["attempt"])) >= 2  # claimed again after the kill
