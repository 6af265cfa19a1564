"""Strøm's task-level retry and on_cancel hooks, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import httpx

from headwater.server.app import create_app
from headwater.server.json_shapes import job_json
from headwater.store.base import JobFilter, JobStatus
from tests.integration.test_engine import start_node

WORKSPACE = """
actions:
  count:
    type: script
    input:
      file: {{ type: string }}
    script: |
      n=$(cat "{{{{ input.file }}}}" 2>/dev/null || echo 0); n=$((n+1))
      echo $n > "{{{{ input.file }}}}"
      [ "$n" -ge 3 ] || exit 1
  note:
    type: script
    input:
      text: {{ type: string }}
    script: echo "{{{{ input.text }}}}" >> {tmp}/hooks
tasks:
  deploy:
    input:
      file: {{ type: string }}
    retry: {{ max_attempts: {attempts}, delay: 0s, backoff: exponential }}
    flow:
      s:
        action: count
        input: {{ file: "{{{{ input.file }}}}" }}
    on_error:
      - action: note
        input: {{ text: "error {{{{ hook.job_id }}}}" }}
    on_cancel:
      - action: note
        input: {{ text: "cancel {{{{ hook.status }}}}" }}
"""


def workspace(tmp_path: Path, attempts: int) -> str:
    return WORKSPACE.format(tmp=tmp_path, attempts=attempts)


async def test_a_failed_job_retries_as_new_linked_jobs_until_it_completes(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(tmp_path, db_url, workspace(tmp_path, 5))
    try:
        last = await node.run_one("deploy", {"file": str(tmp_path / "n")})
        assert last.status is JobStatus.COMPLETED, last.steps
        chain = [last]
        while chain[-1].source_type == "retry":
            previous = await node.store.get_job(chain[-1].source_id or "")
            assert previous is not None
            chain.append(previous)
        assert [j.status for j in reversed(chain)] == [
            JobStatus.FAILED,
            JobStatus.FAILED,
            JobStatus.COMPLETED,
        ]
        assert chain[-1].source_type == "cli"
        assert job_json(last)["retry_of_job_id"] == chain[1].id
        assert not (tmp_path / "hooks").exists()  # hooks wait for the last attempt
    finally:
        await node.close()


async def test_retries_stop_at_max_attempts_and_the_last_failure_fires_on_error(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(tmp_path, db_url, workspace(tmp_path, 1))
    try:
        last = await node.run_one("deploy", {"file": str(tmp_path / "n")})
        assert last.status is JobStatus.FAILED
        retries = await node.store.list_jobs(JobFilter(source_type="retry"))
        assert [j.id for j in retries] == [last.id]  # max_attempts: 1 retry
        assert (tmp_path / "hooks").read_text() == f"error {last.id}\n"
    finally:
        await node.close()


async def test_cancelling_a_pending_job_over_the_api_fires_on_cancel(
    tmp_path: Path, db_url: str
) -> None:
    node = await start_node(tmp_path, db_url, workspace(tmp_path, 1))
    try:
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
            created = await client.post("/api/tasks/deploy/run", json={"input": {"file": "f"}})
            job_id = created.json()["job_id"]
            cancelled = await client.post(f"/api/jobs/{job_id}/cancel")
            assert cancelled.json()["status"] == "cancelled"
        hooks = await node.store.list_jobs(JobFilter(source_type="hook", source_id=job_id))
        assert len(hooks) == 1
        assert hooks[0].input == {"text": "cancel cancelled"}
        # a cancelled job is not retried
        assert await node.store.list_jobs(JobFilter(source_type="retry")) == []
    finally:
        await node.close()
