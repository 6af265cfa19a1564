"""The HTTP API over a real node on SQLite (not tests/fakes.py): input validation is the
product's input schema code, redaction is the product's Redactor over the workspace's
resolved secrets."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from headwater.node import Node, NodeSettings
from headwater.server.app import create_app
from headwater.store.base import JobFilter, LogLine, LogStream
from headwater.workspace.secrets import MASK

SECRET = "real-node-s3cr3t-9f2c"

WORKSPACE = """
secrets:
  api_token: "{{ env.HW_TEST_API_TOKEN }}"
actions:
  noop: { type: script, script: "true" }
tasks:
  order:
    input:
      amount: { type: integer, required: true }
      currency: { type: string, options: [EUR, USD], default: EUR }
      note: { type: string }
    flow:
      s: { action: noop }
"""


@pytest.fixture
async def node(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Node]:
    monkeypatch.setenv("HW_TEST_API_TOKEN", SECRET)
    (tmp_path / "ws.yaml").write_text(textwrap.dedent(WORKSPACE))
    node = Node(tmp_path / "ws.yaml", NodeSettings(db_url=sqlite_url, run_worker=False))
    await node.start()
    try:
        yield node
    finally:
        await node.close()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://hw") as c:
        yield c


async def test_invalid_input_is_422_naming_every_failing_field(
    client: httpx.AsyncClient, node: Node
) -> None:
    resp = await client.post("/api/tasks/order/run", json={"input": {"currency": "GBP", "note": 7}})
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["type"] == "invalid_input"
    assert error["details"]["task"] == "order"
    reasons = error["details"]["reasons"]
    assert len(reasons) == 3, reasons
    for field in ("amount", "currency", "note"):
        assert any(f"`{field}`" in r for r in reasons), (field, reasons)
    assert await node.store.list_jobs(JobFilter()) == []


async def test_valid_input_gets_its_defaults_and_becomes_a_job(
    client: httpx.AsyncClient, node: Node
) -> None:
    resp = await client.post("/api/tasks/order/run", json={"input": {"amount": 5}})
    assert resp.status_code == 201
    job = await node.store.get_job(resp.json()["job_id"])
    assert job is not None
    assert job.input == {"amount": 5, "currency": "EUR"}


async def test_a_secret_in_invalid_input_is_not_echoed(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/tasks/order/run", json={"input": {"amount": SECRET}})
    assert resp.status_code == 422
    assert SECRET not in resp.text
    assert MASK in resp.text


async def test_secrets_are_masked_in_job_input_and_logs_but_kept_in_the_store(
    client: httpx.AsyncClient, node: Node
) -> None:
    note = f"https://user:{SECRET}@example.com"
    resp = await client.post("/api/tasks/order/run", json={"input": {"amount": 1, "note": note}})
    assert resp.status_code == 201
    assert SECRET not in resp.text
    job_id = resp.json()["job_id"]
    assert resp.json()["job"]["input"]["note"] == f"https://user:{MASK}@example.com"
    await node.store.append_logs(
        [
            LogLine(job_id, None, LogStream.STDOUT, f"token={SECRET}", datetime.now(UTC))
        ]  # as a step printed it
    )
    for path in (f"/api/jobs/{job_id}", "/api/jobs", f"/api/jobs/{job_id}/logs"):
        got = await client.get(path)
        assert got.status_code == 200, (path, got.text)
        assert SECRET not in got.text, path
    logs = (await client.get(f"/api/jobs/{job_id}/logs")).json()["logs"]
    assert [entry["line"] for entry in logs] == [f"token={MASK}"]
    stored = await node.store.get_job(job_id)
    assert stored is not None and stored.input["note"] == note  # the job itself needs it
