"""Workflows a remote worker runs (tests/integration/test_remote_workflows.py and
tests/e2e/test_remote_workflow_crash.py). The tests copy this file into the workspace
folder the server ships to its workers, under a name of their own.

Each step appends a line to the file ``log`` names: its side effect, counted by the
tests. ``gated`` notes that it started, and in which process, in ``{log}.started`` (not
a side effect) and waits for the file ``gate`` before its side effect: the e2e test
kills that worker there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import headwater

registry = headwater.Registry(app="remote")


def _note(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@headwater.step
def effect(log: str, name: str) -> str:
    _note(log, name)
    return name


@headwater.step
async def effect_async(log: str, name: str) -> str:
    _note(log, name)
    return name


@headwater.workflow(registry=registry)
def child(log: str, n: int) -> int:
    effect(log, f"child-{n}")
    return n * 10


@headwater.workflow(registry=registry)
def tour(log: str) -> dict[str, Any]:
    """A step, a durable sleep, an event, a message, a child workflow, a step."""
    first = effect(log, "a")
    headwater.sleep(1.1)  # over INLINE_SLEEP: the worker lets the job go meanwhile
    headwater.set_event("stage", "waiting")
    message = headwater.recv("go", timeout=60)
    result = child(log, 4)
    last = effect(log, "b")
    headwater.set_event("stage", "done")
    return {"first": first, "message": message, "child": result, "last": last}


@headwater.workflow(registry=registry)
async def pinger(log: str, target: str) -> str:
    """Waits (durably) for ``target``'s event, then sends it a message."""
    stage = await headwater.get_event_async(target, "stage", timeout=60)
    await headwater.send_async(target, "go", {"from": "pinger", "stage": stage})
    return await effect_async(log, "ping")


@headwater.transaction
def remember(session: Any, n: int) -> int:
    return n


@headwater.workflow(registry=registry)
def transactional(log: str) -> int:
    effect(log, "before")
    return int(remember(1))


@headwater.step
def gated(log: str, name: str, gate: str) -> str:
    _note(log + ".started", f"{name}:{os.getpid()}")
    while not Path(gate).exists():
        time.sleep(0.05)
    _note(log, name)
    return name


@headwater.workflow(registry=registry)
def chain(log: str, gate: str) -> list[str]:
    """Three steps and a durable sleep (the server's timers wake it); the second step
    waits for ``gate`` (the e2e test's kill point)."""
    first = effect(log, "one")
    headwater.sleep(1.1)
    return [first, gated(log, "two", gate), effect(log, "three")]


def workspace_yaml(module: str) -> str:
    """The server's workspace: one task per workflow, named as the workflow."""
    tasks = "\n".join(
        f'  {name}:\n    flow:\n      workflow: {{type: workflow, workflow: "{module}:{name}"}}'
        for name in ("tour", "pinger", "child", "transactional", "chain")
    )
    return f"tasks:\n{tasks}\n"
