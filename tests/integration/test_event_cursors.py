"""Event-source cursors: a consumer that restarts resumes after the last committed event,
and a replayed event never becomes a second job (without a trigger ``dedup_key``)."""

from __future__ import annotations

from pathlib import Path

from headwater.store.base import NewJob
from headwater.triggers.cursor import CURSOR_FIELD
from tests.integration.test_event_sources import Running, running

# Each run resumes after HEADWATER_CURSOR, emits three numbered events (and, from the
# second run on, replays the event it resumed after), then crashes, until it reaches 9.
RESUMING = """
actions:
  consume:
    type: script
    language: python
    script: |
      import json, os, sys
      start = int(os.environ.get("HEADWATER_CURSOR", "0"))
      print("resuming after", os.environ.get("HEADWATER_CURSOR", "<none>"))
      first = max(1, start)  # the event at the cursor again: a replay
      last = min(start + 3, 9)
      for n in range(first, last + 1):
          print("OUTPUT: " + json.dumps({"n": n, "_headwater_cursor": str(n)}), flush=True)
      sys.exit(0 if last == 9 else 1)
  handle:
    type: script
    script: "true"
tasks:
  consumer:
    flow:
      poll: { action: consume }
  numbered:
    input:
      n: { type: integer, required: true }
    flow:
      handle: { action: handle }
triggers:
  numbers:
    type: event_source
    task: consumer
    target_task: numbered
    restart_policy: on_failure
    backoff_secs: 0
    max_crashes: 100
"""


async def _done(rt: Running) -> bool:
    return (await rt.state("numbers"))["state"] == "idle"


async def test_a_restarted_consumer_resumes_after_the_committed_cursor(
    tmp_path: Path, db_url: str
) -> None:
    async with running(tmp_path, db_url, RESUMING) as rt:
        await rt.wait_for(lambda: _done(rt), timeout=60, what="the consumer to reach 9")
        jobs = await rt.jobs("numbered")
        numbers = sorted(j.input["n"] for j in jobs)
        assert numbers == list(range(1, 10))  # none lost, none twice (replays were keyed)
        assert all(CURSOR_FIELD not in j.input for j in jobs)
        state = await rt.state("numbers")
        assert state["cursor"] == "9"
        assert state["cursor_updated_at"] is not None
        consumers = await rt.jobs("consumer")
        resumed = []
        for job in sorted(consumers, key=lambda j: j.created_at):
            logs = await rt.node.store.get_logs(job.id)
            resumed += [r.line for r in logs if r.line.startswith("resuming after")]
        # Each run was told where the one before it stopped; the first run nothing.
        assert resumed == [
            "resuming after <none>",
            "resuming after 3",
            "resuming after 6",
        ]


async def test_the_store_keeps_the_last_cursor_per_trigger(tmp_path: Path, db_url: str) -> None:
    async with running(tmp_path, db_url, RESUMING) as rt:
        store = rt.node.store
        job = NewJob("default", "numbered", {"n": 1}, "api", None, "same-key", frozenset())
        assert await store.get_cursor("default/other") is None
        await store.insert_jobs([job], ("default/other", "5"))
        assert (c := await store.get_cursor("default/other")) is not None and c.cursor == "5"
        # A batch of duplicates still moves it: its events are held by earlier jobs.
        (again,) = await store.insert_jobs([job], ("default/other", "6"))
        assert not again.created
        assert (c := await store.get_cursor("default/other")) is not None and c.cursor == "6"
        await store.insert_jobs([], ("default/third", "a"))  # only rejected events
        assert {(r.trigger, r.cursor) for r in await store.list_cursors()} >= {
            ("default/other", "6"),
            ("default/third", "a"),
        }
