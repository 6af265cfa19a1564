"""Batching survives ``kill -9``: ``headwater up`` is killed while a sender posts events
into a batched webhook and batches are being flushed; a new ``headwater up`` on the same
database takes over. Every event the sender posted (retried when the post failed, and
some redelivered on purpose) ends in exactly one batch job: none lost, none repeated.
Sized to seconds; bench/flow_batching.py measures the long version."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.procs import Up, eventually, up_jobs, up_triggers

EVENTS = 80
KILL_AT = 40

WORKSPACE = """\
actions:
  noop: {type: script, script: "true"}
tasks:
  collect:
    input:
      n: {type: integer, required: true}
    flow:
      run: {action: noop}
triggers:
  hook:
    type: webhook
    task: collect
    batch: {size: 7, window: 150ms}
"""


def _post(up: Up, n: int) -> bool:
    """True once the event was acknowledged (a 2xx: committed in the store)."""
    try:
        r = up.client.post("/hooks/hook", json={"n": n}, headers={"Idempotency-Key": f"e{n}"})
    except httpx.HTTPError:
        return False
    return r.status_code in (200, 202)


def _gathered(up: Up) -> list[int]:
    jobs: list[dict[str, Any]] = up_jobs(up, task="collect")
    return [e["n"] for job in jobs for e in job["input"]["events"]]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_batch_never_loses_or_repeats_an_event_across_kill_9(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db_url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    db_url = db_url or f"sqlite:///{tmp_path}/hw.db"
    ws = tmp_path / "ws.yaml"
    ws.write_text(textwrap.dedent(WORKSPACE))
    up = Up(ws, tmp_path, db_url)
    unsent: list[int] = []
    try:
        for n in range(EVENTS):
            if n == KILL_AT:
                up.kill()  # SIGKILL: buffered events, a flush maybe half way
                up = Up(ws, tmp_path, db_url)
            if not _post(up, n):
                unsent.append(n)
        for n in unsent:  # the sender retries what was not acknowledged
            assert _post(up, n)
        assert up_triggers(up)["hook"]["state"]["buffered"] in range(EVENTS + 1)
        for n in range(0, KILL_AT, 5):  # and a confused sender redelivers some
            assert _post(up, n)

        def all_gathered() -> list[int] | None:
            found = _gathered(up)
            return found if len(set(found)) == EVENTS else None

        found = eventually(all_gathered, timeout=60, what="every event in a batch job")
        assert sorted(found) == list(range(EVENTS))  # each exactly once
        jobs = up_jobs(up, task="collect")
        assert all(len(j["input"]["events"]) <= 7 for j in jobs)
        assert up_triggers(up)["hook"]["state"]["buffered"] == 0  # what waits: nothing
    finally:
        up.stop()
