"""Workflows the integration tests run (tests/integration/test_workflows.py).

Each test passes its own ``tag``, and ``CALLS`` counts how often each step body ran per
tag: the process imports this module once."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import headwater

registry = headwater.Registry(app="wftest")
CALLS: collections.Counter[tuple[str, str]] = collections.Counter()


@headwater.step(retries=2, backoff=0.01)
def flaky(tag: str, fail_times: int) -> str:
    CALLS[(tag, "flaky")] += 1
    if CALLS[(tag, "flaky")] <= fail_times:
        raise RuntimeError(f"attempt {CALLS[(tag, 'flaky')]} failed")
    return "ok"


@headwater.step
def count(tag: str, name: str) -> int:
    CALLS[(tag, name)] += 1
    return CALLS[(tag, name)]


@headwater.workflow(registry=registry)
def steps_then_sleep(tag: str, fail_times: int = 0) -> dict[str, Any]:
    """``count`` runs once though the function runs twice (before and after the sleep)."""
    first = count(tag, "a")
    try:
        outcome = flaky(tag, fail_times)
    except headwater.StepFailedError as exc:
        outcome = f"gave up: {exc.error}"
    headwater.sleep(1.2)
    return {"a": first, "flaky": outcome, "b": count(tag, "b")}


@headwater.step
async def shout(text: str) -> str:
    return text.upper()


@headwater.workflow(registry=registry)
async def talker(tag: str) -> dict[str, Any]:
    """Waits for a message, publishes an event, answers."""
    loud = await shout(tag)
    await headwater.set_event_async("stage", "waiting")
    message = await headwater.recv_async("go", timeout=60)
    late = await headwater.recv_async("never", timeout=1.1)
    await headwater.set_event_async("stage", "done")
    return {"loud": loud, "message": message, "late": late}


@headwater.workflow(registry=registry)
def parent(tag: str) -> int:
    """A child workflow (recorded start, durable wait) and the parent's own step."""
    child = steps_then_sleep(f"{tag}-child")
    return int(child["b"]) + count(tag, "parent")


@headwater.workflow(registry=registry)
def changes_its_mind(tag: str, flag: str) -> str:
    """Calls its steps in the order a file says: a replay that reads another order is
    not deterministic."""
    if Path(flag).read_text() == "ab":
        count(tag, "a")
        headwater.sleep(1.2)
        count(tag, "b")
    else:
        flaky(tag, 0)
        headwater.sleep(1.2)
        count(tag, "a")
    return "done"


@headwater.transaction
def remember(session: Any, tag: str, n: int) -> int:
    from sqlalchemy import text

    session.execute(text("INSERT INTO wf_effects (tag, n) VALUES (:tag, :n)"), {"tag": tag, "n": n})
    return n


@headwater.workflow(registry=registry)
def writes(tag: str) -> int:
    total = remember(tag, 1)
    headwater.sleep(1.1)
    return total + remember(tag, 2)


@headwater.step
def boom(flag: str) -> str:
    if Path(flag).exists():
        raise RuntimeError("the flag is up")
    return "calm"


@headwater.workflow(registry=registry)
def fails_until_fixed(tag: str, flag: str) -> str:
    count(tag, "a")
    return boom(flag)
