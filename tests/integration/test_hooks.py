"""on_success / on_error hooks (task and workspace level) run as jobs of their own."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from headwater.node import Node, NodeSettings
from headwater.store.base import JobFilter, JobRecord, JobStatus
from tests.integration.test_engine import start_node, write_workspace

WORKSPACE = """
secrets:
  channel: "#ops"
actions:
  ok: { type: script, script: "echo fine" }
  boom:
    type: script
    language: python
    script: |
      raise KeyError("token")
  record:
    type: script
    language: python
    input:
      channel: { type: string, default: "{{ secret.channel }}" }
    script: |
      import json, os
      with open("{{ input.path }}", "w") as f:
          f.write(os.environ["HEADWATER_INPUT"])
  broken-hook: { type: script, script: "exit 5" }
  child-task: { type: task, task: plain }
tasks:
  deploy:
    flow:
      build: { action: ok }
    on_success:
      - action: record
        input:
          path: "{{ input.out }}/success.json"
          message: "{{ hook.task_name }} {{ hook.status }} {{ hook.is_success }}"
          job: "{{ hook.job_id }}"
  fails:
    flow:
      build: { action: boom }
      after: { action: ok, depends_on: [build], continue_on_failure: true }
    on_error:
      - action: record
        input:
          path: "{{ input.out }}/error.json"
          error: "{{ hook.error_message }}"
          failed: "{{ hook.failed_steps[0].step_name }}"
          source: "{{ hook.source_type }}"
      - action: broken-hook
  plain:
    flow:
      build: { action: ok }
  parent:
    flow:
      call: { action: child-task }
on_success:
  - action: record
    input:
      path: "{{ input.out | default(value='/nonexistent') }}/workspace-{{ hook.task_name }}.json"
"""


async def hook_jobs(node: Node, job: JobRecord) -> list[JobRecord]:
    found = await node.store.list_jobs(JobFilter(source_type="hook", source_id=job.id))
    return [await node.store.get_job(j.id) or j for j in found]


async def test_hooks_run_as_jobs_with_the_hook_context(tmp_path: Path, db_url: str) -> None:
    node = await start_node(tmp_path, db_url, WORKSPACE)
    out = str(tmp_path)
    try:
        job = await node.run_one("deploy", {"out": out})
        assert job.status is JobStatus.COMPLETED
        (hook,) = await hook_jobs(node, job)
        assert hook.status is JobStatus.COMPLETED, hook.error
        assert hook.task == "_hook:record"
        data = json.loads((tmp_path / "success.json").read_text())
        # The task's own hook replaces the workspace's; the action default is merged.
        assert data == {
            "path": f"{out}/success.json",
            "message": "deploy completed true",
            "job": job.id,
            "channel": "#ops",
        }
        assert not (tmp_path / "workspace-deploy.json").exists()

        job = await node.run_one("fails", {"out": out})
        assert job.status is JobStatus.FAILED
        hooks = await hook_jobs(node, job)
        assert sorted(h.task for h in hooks) == ["_hook:broken-hook", "_hook:record"]
        data = json.loads((tmp_path / "error.json").read_text())
        assert "KeyError: 'token'" in data["error"]
        assert data["failed"] == "build"
        assert data["source"] == "cli"
        # The failed hook is a failed job and fires nothing itself.
        broken = next(h for h in hooks if h.task == "_hook:broken-hook")
        assert broken.status is JobStatus.FAILED
        assert await hook_jobs(node, broken) == []
        logs = await node.store.get_logs(job.id)
        assert any("on_error hook 2 (broken-hook) started as job" in r.line for r in logs)

        # A task without its own on_success uses the workspace's; a sub-job does not.
        job = await node.run_one("parent", {"out": out})
        assert job.status is JobStatus.COMPLETED
        assert (tmp_path / "workspace-parent.json").exists()
        assert not (tmp_path / "workspace-plain.json").exists()
    finally:
        await node.close()


async def test_hooks_fire_from_a_running_node(tmp_path: Path, db_url: str) -> None:
    path = write_workspace(tmp_path, WORKSPACE)
    node = Node(path, NodeSettings(db_url=db_url, kill_grace=1.0))
    await node.start()
    stop = asyncio.Event()
    run = asyncio.create_task(node.run_worker(stop))
    try:
        outcome = await node.submit("deploy", {"out": str(tmp_path)})
        async with asyncio.timeout(30):
            while not (tmp_path / "success.json").exists():
                await asyncio.sleep(0.05)
        job = await node.store.get_job(outcome.id)
        assert job is not None and job.status is JobStatus.COMPLETED
        (hook,) = await hook_jobs(node, job)
        assert hook.source_type == "hook" and hook.source_id == job.id
    finally:
        stop.set()
        await run
        await node.close()
