"""Strøm's cascade skip: a step whose dependencies were all skipped is skipped too."""

from __future__ import annotations

from pathlib import Path

from headwater.store.base import JobStatus, StepStatus
from tests.integration.test_engine import start_node

WORKSPACE = """
actions:
  ok: { type: script, script: "echo ok" }
  boom: { type: script, script: "exit 1" }
tasks:
  branches:
    input:
      env: { type: string, default: staging }
    flow:
      deploy: { action: ok, when: "{{ input.env == 'production' }}" }
      smoke-test: { action: ok, depends_on: [deploy] }
      announce: { action: ok, depends_on: [smoke-test] }
      always: { action: ok, depends_on: [deploy], continue_on_failure: true }
  converge:
    input:
      fast: { type: boolean, default: true }
    flow:
      fast-path: { action: ok, when: "{{ input.fast }}" }
      slow-path: { action: ok, when: "{{ not input.fast }}" }
      merge: { action: ok, depends_on: [fast-path, slow-path] }
"""


async def test_a_step_after_a_branch_not_taken_is_skipped(tmp_path: Path, db_url: str) -> None:
    node = await start_node(tmp_path, db_url, WORKSPACE)
    try:
        job = await node.run_one("branches", {})
        assert job.status is JobStatus.COMPLETED, job.error
        steps = {s.name: s for s in job.steps}
        assert steps["deploy"].status is StepStatus.SKIPPED
        # The deploy did not happen: what follows it must not run either.
        assert steps["smoke-test"].status is StepStatus.SKIPPED
        assert "all dependencies were skipped" in (steps["smoke-test"].error or "")
        assert steps["announce"].status is StepStatus.SKIPPED
        # continue_on_failure runs whatever happened before it.
        assert steps["always"].status is StepStatus.COMPLETED

        job = await node.run_one("branches", {"env": "production"})
        assert {s.name: s.status for s in job.steps} == {
            "deploy": StepStatus.COMPLETED,
            "smoke-test": StepStatus.COMPLETED,
            "announce": StepStatus.COMPLETED,
            "always": StepStatus.COMPLETED,
        }
    finally:
        await node.close()


async def test_a_join_runs_when_one_branch_was_taken(tmp_path: Path, db_url: str) -> None:
    node = await start_node(tmp_path, db_url, WORKSPACE)
    try:
        for fast in (True, False):
            job = await node.run_one("converge", {"fast": fast})
            assert job.status is JobStatus.COMPLETED, job.error
            steps = {s.name: s.status for s in job.steps}
            assert steps["merge"] is StepStatus.COMPLETED
            assert steps["fast-path" if fast else "slow-path"] is StepStatus.COMPLETED
            assert steps["slow-path" if fast else "fast-path"] is StepStatus.SKIPPED
    finally:
        await node.close()
