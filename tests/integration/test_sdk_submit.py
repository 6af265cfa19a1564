"""``headwater.submit``: a YAML task's job enqueued from Python through the dispatcher,
once per idempotency key, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

import headwater
from headwater.core.records import JobFilter
from headwater.errors import (
    ConfigError,
    ConflictError,
    IdempotencyKeyReusedError,
    InputValidationError,
    NotFoundError,
)
from headwater.store.sql import open_store

WORKSPACE = textwrap.dedent(
    """
    actions:
      noop: {type: script, script: "true"}
    tasks:
      invoice:
        input:
          order: {type: string, required: true}
          copies: {type: integer, default: 1}
        flow:
          send: {action: noop}
      other:
        flow:
          noop: {action: noop}
    """
)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws.yaml"
    path.write_text(WORKSPACE)
    return path


async def test_submit_enqueues_a_job_once_per_key(workspace: Path, db_url: str) -> None:
    async with headwater.Submitter(workspace, db=db_url) as submitter:
        first = await submitter.submit("invoice", {"order": "A-1"}, idempotency_key="A-1")
        again = await submitter.submit("invoice", {"order": "A-1"}, idempotency_key="A-1")
        # The defaults filled by the schema are part of the same request.
        same = await submitter.submit(
            "invoice", {"order": "A-1", "copies": 1}, idempotency_key="A-1"
        )
        unkeyed = await submitter.submit("invoice", {"order": "A-1"})
        assert first == again == same != unkeyed
        with pytest.raises(IdempotencyKeyReusedError, match="other input"):
            await submitter.submit("invoice", {"order": "B-2"}, idempotency_key="A-1")
        with pytest.raises(ConflictError, match="job of task 'invoice'"):
            await submitter.submit("other", {}, idempotency_key="A-1")
        with pytest.raises(InputValidationError):
            await submitter.submit("invoice", {"copies": 2}, idempotency_key="no-order")
        with pytest.raises(NotFoundError):
            await submitter.submit("nope", {})
    store = await open_store(db_url)
    try:
        job = await store.get_job(first)
        assert job is not None
        assert (job.task, dict(job.input), job.source_type) == (
            "invoice",
            {"order": "A-1", "copies": 1},
            "sdk",
        )
        assert job.dedup_key == "api:A-1"  # the API's Idempotency-Key space
        listed = await store.list_jobs(JobFilter(task="invoice"))
        assert len(listed) == 2
    finally:
        await store.close()


def test_the_one_call_form_reads_the_environment(
    workspace: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADWATER_WORKSPACE", str(workspace))
    monkeypatch.setenv("HEADWATER_DATABASE_URL", sqlite_url)
    job_id = headwater.submit("invoice", {"order": "C-3"}, idempotency_key="C-3")
    assert headwater.submit("invoice", {"order": "C-3"}, idempotency_key="C-3") == job_id
    monkeypatch.delenv("HEADWATER_WORKSPACE")
    with pytest.raises(ConfigError, match="HEADWATER_WORKSPACE"):
        headwater.submit("invoice", {"order": "C-3"})

    async def inside_a_loop() -> None:
        with pytest.raises(ConfigError, match=r"await headwater\.asubmit"):
            headwater.submit("invoice", {"order": "C-3"}, workspace=workspace)
        assert (
            await headwater.asubmit(
                "invoice", {"order": "C-3"}, idempotency_key="C-3", workspace=workspace
            )
            == job_id
        )

    asyncio.run(inside_a_loop())
