"""Secret values are never stored: a trigger's ``input:`` that names a secret stores a
reference the worker fills in when the job runs, and outputs and errors are masked
before they are written (SQLite and PostgreSQL; the raw rows are read)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from headwater.node import Node, NodeSettings
from headwater.server.app import create_app
from headwater.server.routes_webhooks import create_webhook_router
from headwater.store.base import JobFilter, JobRecord, JobStatus
from headwater.worker.worker import WorkerSettings
from headwater.workspace.secret_refs import REFERENCE_PREFIX
from tests.polling import join

SECRET = "tok-9f8e7d6c5b4a"

FUNCS = f"""
def check(token, auth, source):
    if source == "boom":
        raise RuntimeError("refused with " + token)
    return {{"ok": token == {SECRET!r} and auth == "Bearer " + {SECRET!r}, "echo": token}}
"""


def _workspace(module: str) -> str:
    return f"""
    secrets:
      token: "{SECRET}"
    actions:
      check: {{ type: function, function: "{module}:check" }}
      feed:
        type: script
        script: |
          echo 'OUTPUT: {{"source": "stream"}}'
          sleep 60
      shell:
        type: script
        script: |
          echo "the token is {{{{ input.token }}}}"
          echo 'OUTPUT: {{"seen": "{{{{ input.token }}}}"}}'
    tasks:
      consume:
        flow:
          read: {{ action: feed }}
      use:
        input:
          token: {{ type: string }}
          auth: {{ type: string, default: "" }}
          source: {{ type: string, default: "" }}
        flow:
          check:
            action: check
            input:
              token: "{{{{ input.token }}}}"
              auth: "{{{{ input.auth }}}}"
              source: "{{{{ input.source }}}}"
          shell:
            action: shell
            depends_on: [check]
            input: {{ token: "{{{{ input.token }}}}" }}
    triggers:
      hook:
        type: webhook
        task: use
        input:
          token: "{{{{ secret.token }}}}"
          auth: "Bearer {{{{ secret.token }}}}"
      open:
        type: webhook
        task: use
      stream:
        type: event_source
        task: consume
        target_task: use
        input:
          token: "{{{{ secret.token }}}}"
          auth: "Bearer {{{{ secret.token }}}}"
      tick:
        type: scheduler
        cron: "* * * * * *"
        task: use
        input:
          token: "{{{{ secret.token }}}}"
          auth: "Bearer {{{{ secret.token }}}}"
          source: tick
    """


async def _until(check: Callable[[], Any], timeout: float = 30, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def running(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    module = f"hw_secret_funcs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(FUNCS))
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(_workspace(module)))
    node = Node(
        path,
        NodeSettings(db_url=db_url, kill_grace=0.5, worker=WorkerSettings(concurrency=4)),
    )
    await node.start()
    app = create_app(node)
    app.include_router(create_webhook_router(node.trigger_ctx))
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(node.run_worker(stop)),
        asyncio.create_task(node.run_triggers(stop, watch=False)),
    ]
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
            yield node, client
    finally:
        stop.set()
        try:
            await join(tasks, 30)  # an error in the worker or the manager fails the test
        finally:
            await node.close()
            sys.modules.pop(module, None)
            with contextlib.suppress(ValueError):
                sys.path.remove(str(tmp_path.resolve()))


async def _finished(node: Node, job_id: str) -> JobRecord:
    async def done() -> JobRecord | None:
        job = await node.store.get_job(job_id)
        return job if job is not None and job.status.is_terminal else None

    job: JobRecord = await _until(done, what=f"job {job_id}")
    return job


async def _raw_rows(node: Node) -> str:
    """Every stored job, step and log row as text."""
    engine = node.store.engine  # type: ignore[attr-defined]
    rows: list[str] = []
    async with engine.connect() as conn:
        for query in (
            "SELECT input, output, error FROM jobs",
            "SELECT output, error FROM steps",
            "SELECT line FROM logs",
        ):
            rows += [repr(tuple(r)) for r in (await conn.execute(text(query))).all()]
    return "\n".join(rows)


async def test_a_triggers_secret_input_is_a_reference_filled_in_at_execution(
    running: tuple[Node, httpx.AsyncClient],
) -> None:
    node, client = running
    resp = await client.post("/hooks/hook", json={})
    assert resp.status_code == 202, resp.text
    job = await _finished(node, resp.json()["job_id"])
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.output is not None
    assert job.output["check"]["ok"] is True  # the step saw the secret itself
    assert job.output["check"]["echo"] == "••••••"  # ... which is not stored
    assert job.output["shell"] == {"seen": "••••••"}
    token = job.input["token"]
    assert token.startswith(REFERENCE_PREFIX) and SECRET not in token

    async def scheduled() -> list[JobRecord]:
        jobs = await node.store.list_jobs(JobFilter(source_type="scheduler", limit=5))
        return [j for j in jobs if j.status is JobStatus.COMPLETED]

    (tick, *_) = await _until(scheduled, what="a scheduled job")
    assert tick.output is not None and tick.output["check"]["ok"] is True

    async def streamed() -> list[JobRecord]:
        jobs = await node.store.list_jobs(JobFilter(source_type="event_source", limit=5))
        return [j for j in jobs if j.status is JobStatus.COMPLETED]

    (event,) = await _until(streamed, what="an event source's job")
    assert event.output is not None and event.output["check"]["ok"] is True

    failed = await client.post("/hooks/hook", json={"source": "boom"})
    job = await _finished(node, failed.json()["job_id"])
    assert job.status is JobStatus.FAILED
    assert job.error == "step 'check' failed: raised RuntimeError: refused with ••••••"

    stored = await _raw_rows(node)
    assert REFERENCE_PREFIX in stored
    assert SECRET not in stored


async def test_a_reference_copied_into_another_event_is_not_filled_in(
    running: tuple[Node, httpx.AsyncClient],
) -> None:
    node, client = running
    first = await client.post("/hooks/hook", json={})
    job = await _finished(node, first.json()["job_id"])
    stolen = job.input["token"]
    # Pasted into an event of a trigger without secrets, or at another place of the
    # trigger that has them: the worker leaves it as it is.
    for hook, body in (
        ("open", {"token": stolen, "auth": "Bearer " + stolen}),
        ("hook", {"auth": stolen}),
    ):
        resp = await client.post(f"/hooks/{hook}", json=body)
        job = await _finished(node, resp.json()["job_id"])
        assert job.status is JobStatus.COMPLETED, job.error
        assert job.output is not None and job.output["check"]["ok"] is False
        if hook == "open":
            assert job.output["check"]["echo"] == stolen
    assert SECRET not in await _raw_rows(node)
