"""The workflows of tests/e2e/test_workflow_crash.py, run by ``headwater up`` on this file.

``five`` kills its own process (SIGKILL, no clean-up) once at each point named in
``KILLS``, before or after a step's side effect (a marker file in ``$HW_WF_DIR`` says it
happened, so the next run passes it): inside a transaction step after its INSERT (the
transaction dies uncommitted), at a step's start (after the previous step's record),
inside a plain step after its file append (before its record)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

import headwater

DIR = Path(os.environ.get("HW_WF_DIR", "."))
KILLS = ("1:insert", "2:start", "3:append", "4:insert", "5:start")


def _maybe_die(point: str) -> None:
    marker = DIR / f"killed-{point.replace(':', '-')}"
    if point in KILLS and not marker.exists():
        marker.write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)


@headwater.transaction
def insert(session: Any, run: str, i: int) -> int:
    _maybe_die(f"{i}:start")
    session.execute(text("INSERT INTO wf_effects (run, step) VALUES (:r, :i)"), {"r": run, "i": i})
    _maybe_die(f"{i}:insert")
    return i


@headwater.step
def append(run: str, i: int) -> None:
    with (DIR / f"{run}.log").open("a") as f:
        f.write(f"{i}\n")
    _maybe_die(f"{i}:append")


@headwater.workflow(max_attempts=20)
def five(run: str) -> list[int]:
    done = []
    for i in range(1, 6):
        done.append(insert(run, i))
        append(run, i)
    return done


@headwater.step
def clock() -> float:
    return time.time()


@headwater.workflow
def napper(seconds: float) -> float:
    headwater.sleep(seconds)
    return clock()


@headwater.workflow
def listener() -> Any:
    return headwater.recv("go")
