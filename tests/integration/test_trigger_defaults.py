"""The built-in trigger types at their DEFAULT settings, in a real node: idle for longer than
the trigger waits in one go, then the next event still becomes a job at once, and idling
logged no warning and restarted nothing. (The receivers' twin is
tests/integration/receivers/test_defaults.py.)

- event_source: the consumer says nothing for longer than the default restart backoff
  (5 s); a silent consumer is healthy, not stuck, and its next line is a job at once.
- scheduler: the loop sleeps until the next tick (computed, up to 60 s); after a tick and
  an idle interval the next tick fires on its second, once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.integration.test_event_sources import Running, running
from tests.polling import eventually

# One store is enough: what is under test is the trigger side.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

IDLE_SECS = 6.0  # longer than the default backoff (5 s) between the consumer's lines

SILENT_CONSUMER = """
actions:
  consume:
    type: script
    language: python
    script: |
      import json, time
      print("OUTPUT: " + json.dumps({{"n": 0, "at": time.time()}}), flush=True)
      time.sleep({idle})
      print("OUTPUT: " + json.dumps({{"n": 1, "at": time.time()}}), flush=True)
      time.sleep(1000)
  noop: {{ type: script, script: "true" }}
tasks:
  consumer:
    flow:
      poll: {{ action: consume }}
  target:
    input:
      n: {{ type: integer }}
      at: {{ type: number }}
    flow:
      s: {{ action: noop }}
triggers:
  src:
    type: event_source
    task: consumer
    target_task: target
"""

EVERY_3_SECONDS = """
actions:
  noop: { type: script, script: "true" }
tasks:
  report:
    input:
      at: { type: string }
    flow:
      s: { action: noop }
triggers:
  tick:
    type: scheduler
    task: report
    cron: "*/3 * * * * *"
    input:
      at: "{{ schedule.time }}"
"""


def _complaints(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("log_level") in ("warning", "error", "critical")]


async def _jobs(rt: Running, task: str, n: int) -> list[Any] | None:
    jobs = await rt.jobs(task)
    return jobs if len(jobs) >= n else None


async def test_a_silent_event_source_consumer_stays_up_and_its_next_line_is_a_job(
    tmp_path: Path, db_url: str
) -> None:
    with capture_logs() as logs:
        async with running(tmp_path, db_url, SILENT_CONSUMER.format(idle=IDLE_SECS)) as rt:
            await eventually(lambda: _jobs(rt, "target", 1), 30, what="the first line's job")
            jobs = await eventually(
                lambda: _jobs(rt, "target", 2), IDLE_SECS + 30, what="the second line's job"
            )
            state = await rt.state("src")
    assert sorted(j.input["n"] for j in jobs) == [0, 1]
    assert _complaints(logs) == [], "idling logged a warning"
    assert state["state"] == "running" and state["restarts"] == 0
    second = next(j for j in jobs if j.input["n"] == 1)
    # The line's own timestamp to its job's: a line is read as it is written. A ceiling
    # far below the 5 s a restart would cost, loose enough for a loaded 2-core machine.
    latency = second.created_at.timestamp() - second.input["at"]
    assert latency < 2.0, f"{latency:.2f}s from the line to its job after {IDLE_SECS:g}s idle"


async def test_the_scheduler_fires_the_tick_after_an_idle_interval_on_its_second(
    tmp_path: Path, db_url: str
) -> None:
    with capture_logs() as logs:
        async with running(tmp_path, db_url, EVERY_3_SECONDS) as rt:
            first = await eventually(lambda: _jobs(rt, "report", 1), 30, what="a first tick")
            # Idle past the next tick's wait: the loop sleeps, then wakes for the tick.
            count = len(first)
            jobs = await eventually(
                lambda: _jobs(rt, "report", count + 2), 30, what="two more ticks"
            )
    assert _complaints(logs) == [], "idling logged a warning"
    ticks = sorted(datetime.fromisoformat(j.input["at"]) for j in jobs)
    assert len(set(ticks)) == len(ticks), "a tick made two jobs"
    for job in jobs:
        tick = datetime.fromisoformat(job.input["at"])
        assert tick.second % 3 == 0
        late = (job.created_at - tick.astimezone(UTC)).total_seconds()
        # On its second: not a sleep's length (3 s) or the 60 s maximum sleep late.
        assert -0.1 <= late < 2.0, f"tick {tick} became a job {late:.2f}s after it"
