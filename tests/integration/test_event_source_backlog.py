"""A consumer never queues behind the backlog: on every store, a consumer job started (or
requeued by recovery after its worker died) while older jobs wait is the next job a
worker claims, so ingest resumes at once after a restart under load."""

from __future__ import annotations

import textwrap
from pathlib import Path

from headwater.dispatch.dispatcher import Dispatcher
from headwater.store.base import NewJob, Store
from headwater.store.ids import tag_signature
from headwater.triggers.event_source import EventSourceManager, trigger_key
from headwater.workspace.loader import load_workspace

WORKSPACE = """
actions:
  noop: { type: script, script: "true" }
tasks:
  consumer:
    flow:
      s: { action: noop }
  target:
    flow:
      s: { action: noop }
triggers:
  src:
    type: event_source
    task: consumer
    target_task: target
"""


async def test_a_consumer_is_claimed_before_an_older_backlog_also_after_recovery(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(textwrap.dedent(WORKSPACE))
    ws = load_workspace(path)
    tags = frozenset({"script"})
    backlog = [
        NewJob(ws.name, "target", {"n": i}, "event_source", f"{ws.name}/src", f"k{i}", tags)
        for i in range(50)
    ]
    await store.insert_jobs(backlog)
    manager = EventSourceManager(store, Dispatcher(store, lambda: ws), lambda: ws)
    await manager.reconcile()
    consumer = (await manager.states())[trigger_key(ws.name, "src")].consumer_job_id
    assert consumer is not None
    signature = tag_signature(tags)

    # A worker with one free slot takes the consumer, not the 50 older jobs.
    await store.register_worker("w1", "host:1", tags)
    claimed = await store.claim_jobs("w1", [signature], 1)
    assert [j.id for j in claimed] == [consumer]
    more = await store.claim_jobs("w1", [signature], 2)  # then the backlog, oldest first
    assert [j.input for j in more] == [{"n": 0}, {"n": 1}]

    # The worker dies: recovery requeues the consumer, which again goes first.
    await store.deregister_worker("w1")
    await store.recover_stale_jobs(0.0)
    await store.register_worker("w2", "host:2", tags)
    claimed = await store.claim_jobs("w2", [signature], 1)
    assert [j.id for j in claimed] == [consumer]
