"""`headwater run` and `headwater up` driven through the real CLI and HTTP API."""

from __future__ import annotations

import json
import signal
import textwrap
import time
from pathlib import Path

from tests.e2e.procs import REPO, Up, run_cli

WORKSPACE = """
actions:
  greet:
    type: script
    script: |
      echo "Hello {{ input.name }}"
      echo 'OUTPUT: {"greeting": "Hello {{ input.name }}"}'
  fail:
    type: script
    script: "echo 'it broke' >&2; exit 4"
  nap:
    type: script
    script: |
      echo started
      sleep {{ input.seconds }}
      echo 'OUTPUT: {"slept": {{ input.seconds }}}'
tasks:
  hello:
    input:
      name: { type: string, required: true }
    flow:
      greet: { action: greet, input: { name: "{{ input.name }}" } }
  broken:
    flow:
      s: { action: fail }
  slow:
    input:
      seconds: { type: number, default: 3 }
    flow:
      s: { action: nap, input: { seconds: "{{ input.seconds }}" } }
"""


def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(WORKSPACE))
    return path


def test_run_streams_logs_and_exits_zero_on_success(tmp_path: Path) -> None:
    result = run_cli("run", str(workspace(tmp_path)), "hello", "--input", '{"name": "world"}')
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[greet] Hello world" in result.stdout
    assert "completed" in result.stdout


def test_run_json_prints_the_job(tmp_path: Path) -> None:
    result = run_cli("run", str(workspace(tmp_path)), "hello", "-i", '{"name": "x"}', "--json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "completed"
    assert job["output"] == {"greet": {"greeting": "Hello x"}}
    assert {"id", "task", "input", "steps", "created_at", "source_type"} <= job.keys()


def test_run_exits_one_on_failure_and_two_on_bad_input(tmp_path: Path) -> None:
    ws = str(workspace(tmp_path))
    result = run_cli("run", ws, "broken")
    assert result.returncode == 1
    assert "it broke" in result.stdout
    assert "exit code 4" in result.stdout
    result = run_cli("run", ws, "hello", "--input", "{not json")
    assert result.returncode == 2
    assert "--input is not valid JSON" in result.stderr
    result = run_cli("run", ws, "hello")  # required input missing
    assert result.returncode == 1
    assert "name" in result.stderr and "required" in result.stderr


def test_run_the_hello_example() -> None:
    result = run_cli(
        "run", str(REPO / "examples" / "hello.yaml"), "hello", "--input", '{"name": "world"}'
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_up_serves_the_api_and_the_client_commands(tmp_path: Path) -> None:
    up = Up(workspace(tmp_path), tmp_path)
    try:
        created = up.client.post("/api/tasks/hello/run", json={"input": {"name": "api"}})
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
        job = up.wait_job(job_id)
        assert job["status"] == "completed"
        assert job["output"] == {"greet": {"greeting": "Hello api"}}
        assert job["source_type"] == "api"

        listed = run_cli("jobs", "--json", "--server", up.url)
        assert listed.returncode == 0, listed.stderr
        assert job_id in [j["id"] for j in json.loads(listed.stdout)]
        logs = run_cli("logs", job_id, "--server", up.url)
        assert logs.returncode == 0
        assert "Hello api" in logs.stdout

        bad = up.client.post("/api/tasks/hello/run", json={"input": {}})
        assert bad.status_code == 422
        assert "name" in bad.text
        # The database lives under .headwater/ in the working directory by default.
        assert (tmp_path / ".headwater" / "headwater.db").exists()
    finally:
        code = up.stop()
    assert code == 0, up.output()


def test_cancel_from_the_cli_stops_a_running_job(tmp_path: Path) -> None:
    up = Up(workspace(tmp_path), tmp_path)
    try:
        job_id = up.client.post("/api/tasks/slow/run", json={"input": {"seconds": 60}}).json()[
            "job_id"
        ]
        up.wait_job(job_id, statuses=("running",))
        result = run_cli("cancel", job_id, "--server", up.url)
        assert result.returncode == 0, result.stderr
        job = up.wait_job(job_id, timeout=15)
        assert job["status"] == "cancelled"
    finally:
        up.stop()


def test_kill_9_then_restart_recovers_the_running_job(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    up = Up(ws, tmp_path)
    job_id = up.client.post("/api/tasks/slow/run", json={"input": {"seconds": 1}}).json()["job_id"]
    up.wait_job(job_id, statuses=("running",))
    up.proc.send_signal(signal.SIGKILL)
    up.proc.wait(10)
    up.kill()

    again = Up(ws, tmp_path)
    try:
        job = again.wait_job(job_id, timeout=30)
        assert job["status"] == "completed", job
        assert job["attempt"] == 2
        logs = again.client.get(f"/api/jobs/{job_id}/logs").json()["logs"]
        assert any(r["line"] == "started" for r in logs)
    finally:
        again.stop()


def test_sigterm_gives_running_steps_their_grace_and_recovers_the_rest(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    up = Up(ws, tmp_path)
    job_id = up.client.post("/api/tasks/slow/run", json={"input": {"seconds": 30}}).json()["job_id"]
    up.wait_job(job_id, statuses=("running",))
    started = time.monotonic()
    assert up.stop() == 0
    assert time.monotonic() - started < 25  # shutdown timeout + kill grace, not the job's 30 s

    again = Up(ws, tmp_path)
    try:
        job = again.client.get(f"/api/jobs/{job_id}").json()
        # Interrupted by the shutdown, it was requeued by the next start, not failed.
        assert job["status"] in ("pending", "running"), job
        again.client.post(f"/api/jobs/{job_id}/cancel")
    finally:
        again.stop()
