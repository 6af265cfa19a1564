"""Workspaces written in Strøm's documented syntax, run through `headwater run` (a real
subprocess), with the result Strøm documents. One workspace per feature, under
``workspaces/<feature>/.workflows/`` (Strøm's layout)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import Up, eventually, run_cli, up_jobs

WORKSPACES = Path(__file__).parent / "workspaces"


def run(
    tmp_path: Path,
    feature: str,
    task: str,
    process_env: dict[str, str] | None = None,
    **job_input: Any,
) -> dict[str, Any]:
    result = run_cli(
        "run",
        str(WORKSPACES / feature),
        task,
        "--json",
        "--input",
        json.dumps(job_input),
        cwd=tmp_path,
        **(process_env or {}),
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    job: dict[str, Any] = json.loads(result.stdout)
    return job


def statuses(job: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in job["steps"]}


def test_cascade_skip(tmp_path: Path) -> None:
    job = run(tmp_path, "cascade_skip", "release")
    assert job["status"] == "completed"
    assert statuses(job) == {
        "deploy-prod": "skipped",
        "smoke-test": "skipped",  # all its dependencies were skipped
        "fast-path": "completed",
        "report": "completed",  # one dependency ran
    }
    job = run(tmp_path, "cascade_skip", "release", env="production")
    assert statuses(job)["smoke-test"] == "completed"
    assert statuses(job)["fast-path"] == "skipped"


def test_action_input_defaults(tmp_path: Path) -> None:
    job = run(tmp_path, "action_input", "hello")
    assert job["status"] == "completed"
    assert job["output"] == {
        "default-greeting": {"text": "Hello world"},
        "custom-name": {"text": "Hello Strøm"},
    }


def test_hooks(tmp_path: Path) -> None:
    log = tmp_path / "notifications.txt"
    job = run(tmp_path, "hooks", "deploy", file=str(log))
    assert job["status"] == "completed"
    assert log.read_text() == "deploy completed success=true\n"
    job = run(tmp_path, "hooks", "fails", file=str(log))
    assert job["status"] == "failed"
    lines = log.read_text()
    assert "fails failed at push: " in lines
    assert "cannot connect to registry" in lines  # the step's stderr, via hook.error_message


def test_retry(tmp_path: Path) -> None:
    job = run(tmp_path, "retry", "fetch", dir=str(tmp_path))
    steps = {s["name"]: s for s in job["steps"]}
    assert steps["inherited"]["status"] == "completed"
    assert steps["inherited"]["attempts"] == 3  # the action's retry
    assert steps["overridden"]["status"] == "completed"
    assert steps["overridden"]["attempts"] == 2  # the step's own retry
    assert job["status"] == "completed"


def test_step_error_carries_the_cause(tmp_path: Path) -> None:
    job = run(tmp_path, "step_error", "load")
    assert job["status"] == "failed"
    (step,) = job["steps"]
    assert "exit code 1" in step["error"]
    assert "KeyError: 'database_url'" in step["error"]


def test_nested_secrets(tmp_path: Path) -> None:
    job = run(
        tmp_path, "nested_secrets", "connect", process_env={"COMPAT_DB_PASSWORD": "pw-from-env"}
    )
    assert job["status"] == "completed", job
    # the step read every nested value (it checks the password itself); each leaf is a
    # secret value, so all of them are masked in the job's output
    assert job["output"] == {"connect": {"dsn": "••••••:••••••", "token": "••••••"}}


def test_features_not_built_yet_are_refused(tmp_path: Path) -> None:
    result = run_cli("validate", str(WORKSPACES / "unsupported"), cwd=tmp_path)
    assert result.returncode != 0
    assert "`type: agent` is not supported yet" in result.stdout + result.stderr


def test_task_retry_starts_new_jobs_and_hooks_see_only_the_last(tmp_path: Path) -> None:
    job = run(tmp_path, "retry", "deploy", dir=str(tmp_path), succeed_on=3)
    # two failed jobs, then the second retry completed: `run` answers with the last
    assert job["status"] == "completed", job
    assert job["output"] == {"push": {"attempt": 3}}
    assert job["source_type"] == "retry"
    assert job["retry_of_job_id"] == job["source_id"]
    assert not (tmp_path / "hooks").exists()  # no on_error for a failure that retried

    (tmp_path / "deploy").unlink()
    job = run(tmp_path, "retry", "deploy", dir=str(tmp_path), succeed_on=9)
    assert job["status"] == "failed"
    assert (tmp_path / "hooks").read_text() == "deploy failed (retry)\n"  # once, the last


def test_task_retry_chain_and_on_cancel_through_up(tmp_path: Path) -> None:
    up = Up(WORKSPACES / "retry", tmp_path)
    try:
        created = up.client.post(
            "/api/tasks/deploy/run", json={"input": {"dir": str(tmp_path), "succeed_on": 2}}
        )
        first = created.json()["job_id"]
        assert up.wait_job(first, timeout=60)["status"] == "failed"

        def retry_of_first() -> str | None:
            found: str | None = up.client.get(f"/api/jobs/{first}").json()["retry_job_id"]
            return found

        second = eventually(retry_of_first, timeout=60, what="the retry job")
        assert up.wait_job(second, timeout=60)["status"] == "completed"
        assert up.client.get(f"/api/jobs/{second}").json()["retry_of_job_id"] == first
        listed = up.client.get("/api/jobs", params={"source_type": "retry"}).json()["jobs"]
        assert [j["id"] for j in listed] == [second]

        # on_cancel: cancel a running job, its hook runs
        created = up.client.post("/api/tasks/wait/run", json={"input": {"dir": str(tmp_path)}})
        waiting = created.json()["job_id"]
        eventually(
            lambda: up.client.get(f"/api/jobs/{waiting}").json()["status"] == "running",
            timeout=60,
            what="the job running",
        )
        assert up.client.post(f"/api/jobs/{waiting}/cancel").status_code == 200
        hooks = tmp_path / "hooks"
        eventually(hooks.exists, timeout=60, what="the on_cancel hook")
        assert hooks.read_text() == "wait cancelled success=false\n"
    finally:
        up.stop()


def test_task_state_is_kept_between_runs(tmp_path: Path) -> None:
    # One database for the runs, as a server has (`run` alone uses a fresh one).
    db = f"sqlite:///{tmp_path / 'state.db'}"

    def run_task(task: str) -> dict[str, Any]:
        result = run_cli(
            "run", str(WORKSPACES / "task_state"), task, "--json", "--db", db, cwd=tmp_path
        )
        assert result.returncode == 0, result.stdout + result.stderr
        job: dict[str, Any] = json.loads(result.stdout)
        return job

    first = run_task("maintain-cert")
    # no state yet: `not state` holds, the renewal runs and saves the certificate
    assert statuses(first)["renew"] == "completed"
    assert first["output"] == {"upload": {"domain": "example.com"}}
    second = run_task("maintain-cert")
    # the check found the certificate in $STATE_DIR and said 60 days remain
    assert statuses(second)["renew"] == "skipped"
    assert second["output"] == {"upload": {"domain": "example.org"}}
    # global state: every run reads the count the previous one saved
    assert [run_task("count")["output"]["count"]["runs"] for _ in range(2)] == [1, 2]


def test_task_state_over_the_api(tmp_path: Path) -> None:
    up = Up(WORKSPACES / "task_state", tmp_path)
    try:
        assert up.client.get("/api/tasks/maintain-cert/state").status_code == 404
        created = up.client.post("/api/tasks/maintain-cert/run", json={"input": {}})
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
        assert up.wait_job(job_id, timeout=60)["status"] == "completed"
        snapshot = up.client.get("/api/tasks/maintain-cert/state").json()
        # the renewal's snapshot (the last step that saved one)
        assert snapshot["state"] == {"days_remaining": 90}
        assert snapshot["files"] == ["cert.pem"]
        assert (snapshot["job_id"], snapshot["step"]) == (job_id, "renew")
    finally:
        up.stop()


def test_artifacts_are_kept_from_a_succeeded_step(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    result = run_cli(
        "run",
        str(WORKSPACES / "artifacts"),
        "produce-artifacts",
        "--json",
        "--artifacts-dir",
        str(kept),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    job = json.loads(result.stdout)
    listed = {a["name"]: a for a in job["artifacts"]}
    assert sorted(listed) == ["report.html", "reports/q1.txt", "status.txt"]
    assert listed["report.html"]["step_name"] == "make-report"
    assert listed["report.html"]["content_type"] == "text/html"
    assert listed["status.txt"]["size_bytes"] == 3
    files = kept / job["id"] / "files"
    assert (files / "reports" / "q1.txt").read_text() == "q1\n"


def test_a_failed_steps_artifacts_are_dropped(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    result = run_cli(
        "run",
        str(WORKSPACES / "artifacts"),
        "fails",
        "--json",
        "--artifacts-dir",
        str(kept),
        cwd=tmp_path,
    )
    job = json.loads(result.stdout)
    assert job["status"] == "failed"
    names = {a["name"] for a in job["artifacts"]}
    assert "partial.txt" not in names
    assert "report.html" in names  # the step before it succeeded


def test_artifacts_without_a_place_to_keep_them_fail_the_step(tmp_path: Path) -> None:
    # `headwater run` keeps its database in a temporary folder: without --artifacts-dir
    # the files would vanish, so the step fails and says so.
    job = run(tmp_path, "artifacts", "produce-artifacts")
    assert job["status"] == "failed"
    (step,) = job["steps"]
    assert "--artifacts-dir" in step["error"]


def test_a_local_step_never_writes_its_files_into_the_root(tmp_path: Path) -> None:
    # A script that finds the variables anyway (here through `env`, which validate
    # cannot see) gets empty directories of its own, removed after the step.
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "flow.yaml").write_text(
        "actions:\n"
        "  show:\n"
        "    type: script\n"
        "    script: |\n"
        "      env | grep -E '^(ARTIFACTS|STATE|STATE_OUT)_DIR=' | sort\n"
        "      for d in $(env | grep -E '^(ARTIFACTS|STATE)_DIR=' | cut -d= -f2); do\n"
        '        test -d "$d" && test -z "$(ls -A "$d")" && echo empty; done\n'
        "tasks:\n"
        "  t:\n"
        "    flow:\n"
        "      show:\n"
        "        action: show\n"
    )
    result = run_cli("run", str(ws), "t", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.removeprefix("[show] ") for line in result.stdout.splitlines()]
    dirs = {k: v for k, _, v in (line.partition("=") for line in lines if "_DIR=" in line)}
    assert set(dirs) == {"ARTIFACTS_DIR", "STATE_DIR", "STATE_OUT_DIR"}
    assert all(v.startswith("/") and v != "/" for v in dirs.values())
    assert lines.count("empty") == 2
    assert not any(Path(v).exists() for v in dirs.values())


def test_artifacts_through_up_are_listed_and_downloaded(tmp_path: Path) -> None:
    # Strøm's e2e check: run produce-artifacts, list the job's artifacts (a JSON array),
    # download one by its relative url. `up` keeps them in .headwater/artifacts.
    up = Up(WORKSPACES / "artifacts", tmp_path)
    try:
        created = up.client.post("/api/tasks/produce-artifacts/run", json={"input": {}})
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
        assert up.wait_job(job_id, timeout=60)["status"] == "completed"
        listed = up.client.get(f"/api/jobs/{job_id}/artifacts").json()
        assert sorted(a["name"] for a in listed) == ["report.html", "reports/q1.txt", "status.txt"]
        status = next(a for a in listed if a["name"] == "status.txt")
        assert up.client.get(status["url"]).text == "ok\n"
        assert (tmp_path / ".headwater" / "artifacts" / job_id / "files" / "status.txt").exists()
    finally:
        up.stop()


def test_scheduler_concurrency(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPAT_GATE", str(gate))
        up = Up(WORKSPACES / "concurrency", tmp_path)
    try:

        def skipped() -> list[dict[str, Any]]:
            resp = up.client.get("/api/dead-letters", params={"limit": 1000})
            return [d for d in resp.json() if "concurrency: skip" in d["reason"]]

        def cancelled() -> list[dict[str, Any]]:
            jobs = up_jobs(up, task="refresh-cache")
            return [j for j in jobs if j["status"] == "cancelled"] if len(jobs) >= 3 else []

        # skip: while the first backup waits at the gate, the next ticks start nothing
        eventually(lambda: len(skipped()) >= 2, timeout=60, what="two skipped ticks")
        assert len(up_jobs(up, task="nightly-backup")) == 1
        # cancel_previous: every tick cancels the refresh before it
        eventually(cancelled, timeout=60, what="cancelled refresh jobs")
        gate.touch()  # the backup completes; a later tick starts the next one
        eventually(
            lambda: len(up_jobs(up, task="nightly-backup", status="completed")) >= 2,
            timeout=60,
            what="a second backup after the first completed",
        )
    finally:
        up.stop()


def test_for_each(tmp_path: Path) -> None:
    job = run(tmp_path, "for_each", "main")
    assert job["status"] == "completed", job
    done = [{"result": "done-a"}, {"result": "done-b"}, {"result": "done-c"}]
    assert job["output"]["process"] == done
    assert job["output"]["aggregate"] == {"count": 3, "first": {"result": "done-a"}}
    assert {"process[0]", "process[1]", "process[2]"} <= set(statuses(job))

    job = run(tmp_path, "for_each", "migrations")
    assert job["status"] == "failed"
    assert statuses(job) == {
        "migrate": "failed",
        "migrate[0]": "completed",
        "migrate[1]": "failed",
        "migrate[2]": "skipped",  # sequential: nothing after the failure
    }


def test_approval_waits_for_headwater_approve(tmp_path: Path) -> None:
    """Strøm's approval gate through `headwater up`, decided with `headwater approve`."""
    out = tmp_path / "deploy.txt"
    up = Up(WORKSPACES / "approval", tmp_path)
    try:
        created = up.client.post(
            "/api/tasks/deploy/run", json={"input": {"version": "2.0", "file": str(out)}}
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]

        def waiting() -> dict[str, Any] | None:
            job: dict[str, Any] = up.client.get(f"/api/jobs/{job_id}").json()
            return job if job.get("suspended") else None

        job = eventually(waiting, timeout=60, what="the approval wait")
        assert statuses(job) == {"approve": "suspended"}
        (gate,) = job["steps"]
        assert (
            gate["output"]["approval_message"].strip() == "Approve deployment of 2.0 to production?"
        )
        eventually(lambda: out.exists(), timeout=60, what="the on_suspended hook")
        assert out.read_text() == "deploy in approval is awaiting approval\n"
        shown = run_cli("jobs", "--server", up.url, cwd=tmp_path)
        assert "suspended" in shown.stdout, shown.stdout
        decided = run_cli(
            "approve",
            job_id[-8:],
            "approve",
            "--as",
            "ops@example.com",
            "--server",
            up.url,
            cwd=tmp_path,
        )
        assert decided.returncode == 0, decided.stdout + decided.stderr
        job = up.wait_job(job_id, timeout=60)
        assert job["status"] == "completed", job
        assert job["output"]["approve"]["approved"] is True
        assert out.read_text().splitlines()[-1] == "deploying 2.0 approved by ops@example.com"

        created = up.client.post("/api/tasks/maintenance/run", json={"input": {"file": str(out)}})
        job = up.wait_job(created.json()["job_id"], timeout=60)
        assert job["status"] == "failed"  # nobody answered within `timeout: 1s`
        assert statuses(job) == {"approve": "failed", "execute": "skipped"}
    finally:
        up.stop()


def test_several_workspaces_and_a_cross_workspace_action(tmp_path: Path) -> None:
    config = WORKSPACES / "multi_workspace" / "server-config.yaml"
    result = run_cli("run", str(config), "daily", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    job = json.loads(result.stdout)
    # jobs.recalc-agg-sessions ran with the jobs workspace's folder and secret.
    assert job["output"]["recalc"] == [
        {"recalculated": "sessions/2025-01"},
        {"recalculated": "sessions/2025-02"},
    ]
    assert (job["workspace"], job["task"]) == ("default", "daily")
    # The other workspace's own task, addressed as workspace/task.
    result = run_cli("run", str(config), "jobs/recalc", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    job = json.loads(result.stdout)
    assert (job["workspace"], job["output"]) == (
        "jobs",
        {"once": {"recalculated": "manual/2025-03"}},
    )


def test_a_reference_to_a_workspace_that_is_not_loaded_is_an_error(tmp_path: Path) -> None:
    alone = WORKSPACES / "multi_workspace" / "default"
    result = run_cli("validate", str(alone), cwd=tmp_path)
    assert result.returncode == 1
    assert re.search(
        r"daily\.yaml:13:\d+: error: .*'jobs\.recalc-agg-sessions'.*workspace 'jobs' is not"
        r" loaded",
        result.stdout,
    ), result.stdout


def test_several_workspaces_through_up(tmp_path: Path) -> None:
    up = Up(WORKSPACES / "multi_workspace" / "server-config.yaml", tmp_path)
    try:
        names = {t["name"] for t in up.client.get("/api/tasks").json()}
        assert names == {"daily", "jobs/recalc"}
        created = up.client.post("/api/tasks/jobs%2Frecalc/run", json={"input": {"period": "q"}})
        assert created.status_code == 201, created.text
        job = up.wait_job(created.json()["job_id"], timeout=60)
        assert job["status"] == "completed", job
        assert job["output"] == {"once": {"recalculated": "manual/q"}}
        assert [j["id"] for j in up_jobs(up, task="jobs/recalc")] == [job["id"]]
    finally:
        up.stop()


def test_worker_tags_in_up(tmp_path: Path) -> None:
    # Strøm: a step runs only on a worker whose tags include the step's. `up` without
    # the tag runs what it can and leaves the job waiting, saying for what.
    up = Up(WORKSPACES / "worker_tags", tmp_path)
    try:
        created = up.client.post("/api/tasks/train/run", json={"input": {}})
        job_id = created.json()["job_id"]

        def waiting() -> dict[str, Any] | None:
            job: dict[str, Any] = up.client.get(f"/api/jobs/{job_id}").json()
            return job if job["status"] == "pending" and job["steps"] else None

        job = eventually(waiting, timeout=60, what="the job waiting for a gpu worker")
        assert statuses(job) == {"prepare": "completed"}
        assert job["error"] == "waiting for a worker with the tags gpu, script (step 'fit')"
        assert "gpu" in job["waiting_for"]
        assert "note: step 'fit' of task 'train' needs the worker tags gpu" in up.output()
    finally:
        up.stop()
    # The same database, now with a worker that has the tag: the job resumes and ends.
    up = Up(WORKSPACES / "worker_tags", tmp_path, None, "--tags", "gpu")
    try:
        job = up.wait_job(job_id, timeout=60)
        assert job["status"] == "completed", job
        assert statuses(job) == {"prepare": "completed", "fit": "completed", "publish": "completed"}
        assert job["output"]["publish"] == {"published": True}
    finally:
        up.stop()


ARGS_OUTPUT = {
    "deploy": {"env": "prod; rm -rf /", "flag": "--region", "region": "us-east-1", "count": 3},
    "shell": {"first": "hello", "second": "two words", "count": 2},
    "python": {"argv": ["HELLO", "$(echo not run)"]},
}


def test_action_args(tmp_path: Path) -> None:
    # Each rendered element is one argument, never re-read by a shell.
    job = run(tmp_path, "args", "release", environment="prod; rm -rf /")
    assert job["status"] == "completed", job
    assert job["output"] == ARGS_OUTPUT


def test_action_args_through_up(tmp_path: Path) -> None:
    up = Up(WORKSPACES / "args", tmp_path)
    try:
        created = up.client.post(
            "/api/tasks/release/run", json={"input": {"environment": "prod; rm -rf /"}}
        )
        assert created.status_code == 201, created.text
        job = up.wait_job(created.json()["job_id"], timeout=60)
        assert job["status"] == "completed", job
        assert job["output"] == ARGS_OUTPUT
    finally:
        up.stop()
