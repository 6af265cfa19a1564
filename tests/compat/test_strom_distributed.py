"""The compat workspaces for hooks, approval and for_each in distributed mode: one
``headwater server`` on PostgreSQL serving them as three workspaces, and one remote
``headwater worker`` that runs every step, with the results Strøm documents."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from tests.compat.test_strom_workspaces import WORKSPACES, statuses
from tests.conftest import require_service
from tests.e2e.cluster import RemoteWorkerProc, Server, create_token, wait_for

FEATURES = ("hooks", "approval", "for_each")


def write_config(tmp_path: Path) -> Path:
    """The three workspaces under one folder, which the server ships to its worker."""
    root = tmp_path / "workspaces"
    lines = ["workspaces:"]
    for feature in FEATURES:
        shutil.copytree(WORKSPACES / feature, root / feature)
        lines.append(f"  {feature}: {{ type: folder, path: ./{feature} }}")
    config = root / "server-config.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


def test_hooks_approval_and_for_each_on_a_remote_worker(tmp_path: Path, pg_url: str) -> None:
    require_service("postgres")
    server = Server("server", write_config(tmp_path), pg_url, tmp_path)
    worker = RemoteWorkerProc("worker", [server.url], create_token(pg_url, "compat"), tmp_path)
    notes, deploys = tmp_path / "notifications.txt", tmp_path / "deploy.txt"
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:

            def start(task: str, **job_input: Any) -> str:
                created = client.post(f"/api/tasks/{task}/run", json={"input": job_input})
                assert created.status_code == 201, created.text
                job_id: str = created.json()["job_id"]
                return job_id

            def finished(job_id: str) -> dict[str, Any]:
                def check() -> dict[str, Any] | None:
                    job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
                    return job if job["status"] in ("completed", "failed") else None

                found: dict[str, Any] = wait_for(check, 90, f"job {job_id} to finish")
                return found

            # hooks: the task's on_success, and the workspace's on_error with the cause.
            job = finished(start("deploy", file=str(notes)))
            assert job["status"] == "completed", job
            wait_for(notes.exists, 60, "the on_success hook job")
            assert notes.read_text() == "deploy completed success=true\n"
            job = finished(start("fails", file=str(notes)))
            assert job["status"] == "failed", job
            wait_for(lambda: "registry" in notes.read_text(), 60, "the on_error hook")
            lines = notes.read_text()
            assert "fails failed at push: " in lines, lines
            assert "cannot connect to registry" in lines  # the remote step's stderr

            def hook_statuses() -> list[str] | None:
                found = client.get("/api/jobs", params={"source_type": "hook"}).json()["jobs"]
                done = sorted(j["status"] for j in found)
                return done if all(s in ("completed", "failed") for s in done) else None

            assert wait_for(hook_statuses, 60, "the hook jobs") == ["completed", "completed"]

            # approval: the job waits holding no worker; approved over the API.
            job_id = start("approval/deploy", version="2.0", file=str(deploys))

            def waiting() -> dict[str, Any] | None:
                job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
                return job if job.get("suspended") else None

            job = wait_for(waiting, 60, "the approval wait")
            assert (job["status"], statuses(job)) == ("running", {"approve": "suspended"})
            # a later workspace's task hook: its action and `hook.task_name` are its own
            wait_for(deploys.exists, 60, "the on_suspended hook")
            assert deploys.read_text() == "deploy in approval is awaiting approval\n"
            decided = client.post(
                f"/api/jobs/{job_id}/steps/approve/approve",
                json={"approved": True, "approver": "ops@example.com"},
            )
            assert decided.status_code == 200, decided.text
            job = finished(job_id)
            assert job["status"] == "completed", job
            assert job["output"]["approve"]["approved"] is True
            assert (
                deploys.read_text().splitlines()[-1] == "deploying 2.0 approved by ops@example.com"
            )

            # for_each: fan-out, the list of outputs, and a sequential loop's failure rule.
            job = finished(start("for_each/main"))
            assert job["status"] == "completed", job
            done = [{"result": "done-a"}, {"result": "done-b"}, {"result": "done-c"}]
            assert job["output"]["process"] == done
            assert job["output"]["aggregate"] == {"count": 3, "first": {"result": "done-a"}}
            job = finished(start("for_each/migrations"))
            assert job["status"] == "failed"
            assert statuses(job) == {
                "migrate": "failed",
                "migrate[0]": "completed",
                "migrate[1]": "failed",
                "migrate[2]": "skipped",
            }
            # Every step ran on the remote worker (the server runs none itself).
            names = {w["id"]: w["name"] for w in client.get("/api/workers").json()}
            assert names.get(job["worker_id"]) == "worker"
    finally:
        worker.stop()
        server.stop()
