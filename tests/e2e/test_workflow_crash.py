"""Durable workflows survive ``kill -9`` (SQLite and PostgreSQL), on ``headwater up``
serving tests/e2e/workflow_crash_app.py:

- a 5-step workflow whose worker dies at step boundaries (inside a transaction step
  before its commit, at a step's start, inside a plain step before its record): every
  transaction step's row exists once, every call is recorded once, the workflow
  completes once; a plain step's side effect happened at least once, twice at most
  where the process died right after it;
- a sleeping workflow survives a restart and wakes on time (± 1 s; if the restart took
  longer than the sleep, within 1 s of the worker's return), and a message sent
  while no worker ran (``headwater up`` was down) is received after it comes back.
Sized to seconds (a few restarts of ``headwater up``)."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

import headwater
from headwater.store.urls import normalise_url
from tests.e2e.procs import REPO, Up, eventually

APP = REPO / "tests" / "e2e" / "workflow_crash_app.py"
# Each test restarts ``headwater up`` (1-6 times): seconds on an idle machine, minutes on
# a crowded one (importing the node took 13 s at a load average of 12).
# The "restart" group: kill -9 tests of one `headwater up` that depend on no heartbeat or
# lease deadline run one at a time, beside the "crash" group (see tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.xdist_group("restart")]


def _db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path}/hw.db"


def _sync_url(db_url: str) -> Any:
    url = normalise_url(db_url)
    return (
        url.set(drivername="postgresql+psycopg")
        if url.get_backend_name() == "postgresql"
        else url.set(drivername="sqlite")
    )


def _app(tmp_path: Path) -> Path:
    app = tmp_path / "workflow_crash_app.py"
    shutil.copy(APP, app)
    return app


async def _start(db_url: str, app: Path, name: str, workflow_id: str, **kwargs: Any) -> str:
    """Start a workflow from this process (a client on the database), like a script."""
    import importlib.util

    registry = headwater.Registry(app="default")  # the server's app name
    previous = headwater.set_default_registry(registry)
    try:
        spec = importlib.util.spec_from_file_location(f"crash_app_{workflow_id}", app)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        headwater.set_default_registry(previous)
    async with headwater.WorkflowClient(db_url, registry) as client:
        handle = await client.start(getattr(module, name), workflow_id=workflow_id, **kwargs)
    return handle.job_id


def _workflow(up: Up, workflow_id: str) -> dict[str, Any]:
    resp = up.client.get(f"/api/workflows/{workflow_id}")
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def _start_again(app: Path, tmp_path: Path, db_url: str) -> tuple[Up, int]:
    """A new ``headwater up`` and how often it died first: on a loaded machine it can reach
    the next kill point before it answers, and that death is one of the five."""
    early = 0
    while True:
        try:
            return Up(app, tmp_path, db_url), early
        except RuntimeError as exc:
            if "exited -9" not in str(exc):
                raise
            early += 1
            assert early <= 5, str(exc)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_five_step_workflow_completes_once_across_kill_9_at_step_boundaries(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_url = _db(backend, tmp_path, request)
    monkeypatch.setenv("HW_WF_DIR", str(tmp_path))
    engine = create_engine(_sync_url(db_url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE wf_effects (run TEXT, step INTEGER)"))
    app = _app(tmp_path)
    # The app module is imported as "workflow_crash_app" in the server; here as another
    # module, with the same workflow names.
    job_id = asyncio.run(_start(db_url, app, "five", "five-1", run="r1"))
    # Even the first server can reach its first kill point before the test sees it answer.
    up, restarts = _start_again(app, tmp_path, db_url)
    try:
        while True:
            try:
                job = up.client.get(f"/api/jobs/{job_id}").json()
            except httpx.HTTPError:  # it is dying
                job = None
            if job is not None and job["status"] in ("completed", "failed", "cancelled"):
                break
            if up.proc.poll() is not None:  # it killed itself at a boundary: start again
                up.kill()
                restarts += 1
                assert restarts <= 5, up.output()
                up, early = _start_again(app, tmp_path, db_url)
                restarts += early
                assert restarts <= 5
                continue
            time.sleep(0.1)
        data = _workflow(up, "five-1")
    finally:
        up.kill()
    assert restarts == 5
    assert data["status"] == "completed", data["error"]
    assert data["output"] == {"workflow": [1, 2, 3, 4, 5]}
    calls = [(s["seq"], s["name"]) for s in data["workflow_steps"]]
    assert calls == [(n, "insert" if n % 2 == 0 else "append") for n in range(10)]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT step FROM wf_effects WHERE run = 'r1'")).all()
    engine.dispose()
    assert sorted(r[0] for r in rows) == [1, 2, 3, 4, 5]  # each transaction step once
    appended = (tmp_path / "r1.log").read_text().split()
    # At least once; the process died right after step 3's append, before its record.
    assert sorted(appended) == ["1", "2", "3", "3", "4", "5"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_sleep_and_a_message_survive_a_restart(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_url = _db(backend, tmp_path, request)
    monkeypatch.setenv("HW_WF_DIR", str(tmp_path))
    app = _app(tmp_path)
    asyncio.run(_start(db_url, app, "napper", "nap-1", seconds=8.0))
    asyncio.run(_start(db_url, app, "listener", "listen-1"))
    up = Up(app, tmp_path, db_url)

    def waiting() -> bool:
        both = [_workflow(up, "nap-1"), _workflow(up, "listen-1")]
        return all(d["suspended"] for d in both)

    eventually(waiting, timeout=30, what="both workflows waiting without a worker")
    up.kill()  # SIGKILL while both wait

    async def send() -> None:
        async with headwater.WorkflowClient(db_url) as client:
            await client.send("listen-1", "go", {"hello": "again"})

    asyncio.run(send())  # no worker runs now: the message waits in the store
    up = Up(app, tmp_path, db_url)
    back_at = time.time()  # a worker runs again (its node started before the API answers)
    try:

        def ended(workflow_id: str) -> dict[str, Any] | None:
            data = _workflow(up, workflow_id)
            return data if data["status"] in ("completed", "failed") else None

        listened = eventually(lambda: ended("listen-1"), timeout=30, what="the listener")
        napped = eventually(lambda: ended("nap-1"), timeout=30, what="the napper")
    finally:
        up.kill()
    assert listened["output"] == {"workflow": {"hello": "again"}}
    assert napped["status"] == "completed", napped["error"]
    sleep = napped["workflow_steps"][0]
    assert sleep["kind"] == "sleep"
    wake_at = datetime.fromisoformat(sleep["output"]["wake_at"]).timestamp()
    woke = napped["output"]["workflow"]
    # On time (± 1 s), or, when the restart took longer than the sleep (a loaded
    # machine), as soon as a worker ran again.
    assert wake_at - 0.05 <= woke <= max(wake_at, back_at) + 1.0, (woke, wake_at, back_at)
