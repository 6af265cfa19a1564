"""`headwater up` with an approval step: the wait survives a restart of the process, and
`headwater job` / `headwater reject` / `headwater approve` work on it (real CLI)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from tests.e2e.procs import Up, eventually, run_cli

WORKSPACE = """
actions:
  say:
    type: script
    script: echo "shipped {{ input.what }}"
tasks:
  release:
    input:
      what: { type: string }
    flow:
      gate:
        type: approval
        message: "Release {{ input.what }}?"
        timeout: 1h
      ship:
        action: say
        depends_on: [gate]
        input: { what: "{{ input.what }}" }
"""


def _waiting(up: Up, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] = up.client.get(f"/api/jobs/{job_id}").json()
    return job if job.get("suspended") else None


def test_a_waiting_job_survives_a_restart_and_is_decided_from_the_cli(tmp_path: Path) -> None:
    ws = tmp_path / "ws.yaml"
    ws.write_text(textwrap.dedent(WORKSPACE))
    up = Up(ws, tmp_path)
    try:
        ids = []
        for what in ("v1", "v2"):
            created = up.client.post("/api/tasks/release/run", json={"input": {"what": what}})
            assert created.status_code == 201, created.text
            ids.append(created.json()["job_id"])
        for job_id in ids:
            eventually(lambda job_id=job_id: _waiting(up, job_id), 60, "the approval wait")
    finally:
        assert up.stop() == 0
    up = Up(ws, tmp_path)  # the same database: the waits are still there
    try:
        approved, rejected = ids
        job = eventually(lambda: _waiting(up, approved), 30, "the wait after the restart")
        (gate,) = job["steps"]
        assert gate["status"] == "suspended" and gate["timeout_at"]
        shown = run_cli("job", approved[-8:], "--server", up.url, cwd=tmp_path)
        assert "waits for approval" in shown.stdout and "Release v1?" in shown.stdout

        result = run_cli(
            "reject",
            rejected[-8:],
            "gate",
            "--reason",
            "not today",
            "--server",
            up.url,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        job = up.wait_job(rejected, timeout=60)
        assert job["status"] == "failed"
        assert "not today" in job["error"]
        assert {s["name"]: s["status"] for s in job["steps"]} == {
            "gate": "failed",
            "ship": "skipped",
        }

        result = run_cli("approve", approved[-8:], "gate", "--server", up.url, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        job = up.wait_job(approved, timeout=60)
        assert job["status"] == "completed", job
        again = run_cli("approve", approved[-8:], "gate", "--server", up.url, cwd=tmp_path)
        assert again.returncode != 0
        assert "not waiting for approval" in again.stderr
    finally:
        up.stop()
