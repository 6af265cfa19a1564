"""Kill -9 chaos for event-source cursors, shared by the CI test
(tests/e2e/test_cursor_chaos.py) and the long run (bench/cursor_chaos.py).

``headwater up`` (SQLite) runs a consumer that resumes after ``HEADWATER_CURSOR`` and
emits numbered events 1..N, each carrying its number as ``_headwater_cursor``; it does
not flush after each line, so every kill loses what sits in its stdout buffer and in the
pipe. Meanwhile the consumer and headwater itself are SIGKILLed in turn. The trigger has
no ``dedup_key``. At the end each number must be exactly one job.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.procs import Up, run_cli, up_triggers

WORKSPACE = """
actions:
  consume:
    type: script
    language: python
    script: |
      import json, os, sys, time
      run = os.environ["RUN_DIR"]
      with open(os.path.join(run, f"{os.getpid()}.pid"), "w") as f:
          f.write(str(os.getpid()))
      total = int(os.environ["EVENTS"])
      pace = float(os.environ["PACE"])
      # Without cursors (the baseline): resume after what this consumer last printed.
      mine = os.path.join(run, "printed")
      with_cursor = os.environ["MODE"] == "cursor"
      if with_cursor:
          start = int(os.environ.get("HEADWATER_CURSOR", "0"))
      else:
          start = int(open(mine).read()) if os.path.exists(mine) else 0
      print("resuming after", start, flush=True)
      for n in range(start + 1, total + 1):
          event = {"n": n, "_headwater_cursor": str(n)} if with_cursor else {"n": n}
          sys.stdout.write("OUTPUT: " + json.dumps(event) + "\\n")
          if n % 100 == 0:
              sys.stdout.flush()
              if not with_cursor:
                  with open(mine + ".tmp", "w") as f:
                      f.write(str(n))
                  os.replace(mine + ".tmp", mine)
              time.sleep(pace)
      sys.stdout.flush()
      with open(os.path.join(run, "done"), "w") as f:
          f.write("1")
      print("all sent", flush=True)
      while True:
          time.sleep(3600)
  record:
    type: function
    function: "builtins:dict"
tasks:
  consumer:
    flow:
      read: { action: consume }
  numbered:
    input:
      n: { type: integer, required: true }
    flow:
      keep: { action: record }
triggers:
  src:
    type: event_source
    task: consumer
    target_task: numbered
    restart_policy: always
    backoff_secs: 0
    max_crashes: 1000
    env:
      RUN_DIR: "@RUN@"
      EVENTS: "@EVENTS@"
      PACE: "@PACE@"
      MODE: "@MODE@"
"""


@dataclass
class ChaosReport:
    events: int
    kills: Counter[str] = field(default_factory=Counter)
    jobs: int = 0
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0
    cursor: str | None = None
    runs: int = 0  # consumer runs (each one resumed from the stored cursor)
    keyed_by_cursor: bool = True
    cli_cursor: str | None = None  # as `headwater triggers --json` shows it
    resumed_in_order: bool = True  # each run started at or after the one before it

    def summary(self) -> str:
        kills = ", ".join(f"{k} {v}" for k, v in sorted(self.kills.items()))
        return (
            f"events {self.events}: jobs {self.jobs}, lost {self.lost}, duplicate "
            f"{self.duplicated}; kills: {kills}; consumer runs {self.runs}; "
            f"cursor {self.cursor}; {self.seconds:.1f}s"
        )


def _progress(up: Up, key: str = "cursor") -> int:
    """The stored cursor, or (``key="events_accepted"``) the trigger's jobs."""
    try:
        state = up_triggers(up)["src"]["state"] or {}
    except Exception:  # headwater is being killed and restarted
        return -1
    value = state.get(key)
    return int(value) if value else 0


def _position(up: Up, run_dir: Path, cursors: bool) -> int:
    """How far the consumer got: the stored cursor, or (baseline) what it printed."""
    if cursors:
        return _progress(up)
    with contextlib.suppress(OSError, ValueError):
        return int((run_dir / "printed").read_text())
    return 0


def _finished(up: Up, run_dir: Path, events: int, cursors: bool) -> bool:
    if cursors:
        return _progress(up) >= events
    if not (run_dir / "done").exists():
        return False
    before = _progress(up, "events_accepted")
    time.sleep(2)  # the last lines are committed within a batch's time
    return _progress(up, "events_accepted") == before


def _live_consumer(run_dir: Path, killed: set[int]) -> int | None:
    for pid_file in run_dir.glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text())
            if pid in killed:
                continue
            os.kill(pid, 0)
            return pid
    return None


def _kill_all(run_dir: Path) -> None:
    for pid_file in run_dir.glob("*.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def run_chaos(
    tmp: Path,
    events: int,
    plan: list[str],
    pace: float = 0.01,
    step: int = 200,
    timeout: float = 120,
    cursors: bool = True,
) -> ChaosReport:
    """``plan``: the kills in order, each "consumer" or "headwater"; the next kill comes
    once the consumer moved ``step`` events further. ``cursors=False``: the baseline, a consumer
    without cursors that resumes after the last events it printed (and flushed)."""
    run_dir = tmp / "run"
    run_dir.mkdir(exist_ok=True)
    db = tmp / "chaos.db"
    ws = tmp / "ws.yaml"
    text = textwrap.dedent(WORKSPACE).replace("@RUN@", str(run_dir))
    text = text.replace("@EVENTS@", str(events)).replace("@PACE@", str(pace))
    ws.write_text(text.replace("@MODE@", "cursor" if cursors else "printed"))
    url = f"sqlite:///{db}"
    report = ChaosReport(events)
    started = time.monotonic()
    deadline = started + timeout
    up = Up(ws, tmp, url)
    try:
        mark = 0
        killed: set[int] = set()
        for kind in plan:
            while (now := _position(up, run_dir, cursors)) < min(mark + step, events - 1):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no progress: cursor {now}\n{up.output()[-3000:]}")
                time.sleep(0.05)
            mark = now
            if kind == "consumer":
                while (pid := _live_consumer(run_dir, killed)) is None:
                    if time.monotonic() > deadline:
                        raise AssertionError("no consumer process to kill")
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            else:
                up.proc.send_signal(signal.SIGKILL)
                up.proc.wait(10)
                up.kill()
                # The consumer dies with it (it cannot outlive headwater); make sure.
                while (pid := _live_consumer(run_dir, killed)) is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                up = Up(ws, tmp, url)
            report.kills[kind] += 1
        while not _finished(up, run_dir, events, cursors):
            if time.monotonic() > deadline:
                raise AssertionError(f"stuck at {_progress(up)}\n{up.output()[-3000:]}")
            time.sleep(0.1)
        report.cursor = str(_progress(up)) if cursors else None
        listed = run_cli("triggers", "--json", "--server", up.url)
        rows = {row["name"]: row for row in json.loads(listed.stdout)} if listed.stdout else {}
        report.cli_cursor = (rows.get("src", {}).get("state") or {}).get("cursor")
    finally:
        up.stop()
        _kill_all(run_dir)
    report.seconds = time.monotonic() - started
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT json_extract(input, '$.n'), dedup_key, source_id FROM jobs"
            " WHERE source_type = 'event_source'"
        ).fetchall()
        resumed = conn.execute(
            "SELECT line FROM logs WHERE line LIKE 'resuming after %' ORDER BY seq"
        ).fetchall()
    starts = [int(line.rsplit(" ", 1)[1]) for (line,) in resumed]
    report.runs = len(starts)
    report.resumed_in_order = starts == sorted(starts) and starts[:1] == [0]
    counts = Counter(int(n) for n, _, _ in rows)
    report.jobs = len(rows)
    report.lost = sum(1 for n in range(1, events + 1) if n not in counts)
    report.duplicated = sum(c - 1 for c in counts.values() if c > 1)
    report.keyed_by_cursor = all(key == f"es:{src}:cursor:{n}" for n, key, src in rows)
    return report
