"""A headwater receiver process that SIGKILLs itself at a chosen point of its first batch.

Run by test_crash.py: ``python -m tests.integration.receivers.crash_child DB_URL KILL_AT``
with the trigger and secrets as JSON on stdin. KILL_AT is ``before_commit`` (messages
received, no job written yet) or ``after_commit`` (jobs committed, broker not yet
acknowledged): the two windows where a crash could lose or duplicate a message.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from headwater.dispatch.dispatcher import Dispatcher, DispatchOutcome, Event
from headwater.store.sql import open_store
from headwater.triggers.receivers.manager import ReceiverManager
from headwater.workspace.templating import TemplateEngine
from tests.integration.receivers.conftest import workspace_with


class _KillingDispatcher(Dispatcher):
    kill_at = "before_commit"

    async def dispatch(self, events: Sequence[Event]) -> list[DispatchOutcome]:
        if events and self.kill_at == "before_commit":
            os.kill(os.getpid(), signal.SIGKILL)
        outcomes = await super().dispatch(events)
        if events and self.kill_at == "after_commit":
            os.kill(os.getpid(), signal.SIGKILL)
        return outcomes


async def run_and_kill(
    db_url: str,
    kill_at: str,
    trigger: dict[str, Any],
    secrets: dict[str, str],
    setup: list[Any] | None = None,
) -> int | None:
    """Run this module as a child process with ``trigger``; its exit code (-SIGKILL when
    it reached its first batch). ``setup``: ``["module:function", *args]`` the child calls
    first (a harness that fakes a client library installs its fake there)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.receivers.crash_child",
        db_url,
        kill_at,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    spec = {"trigger": trigger, "secrets": secrets, "setup": setup}
    await child.communicate(json.dumps(spec).encode())
    return child.returncode


async def main(db_url: str, kill_at: str, spec: dict[str, Any]) -> None:
    if spec.get("setup"):
        target, *args = spec["setup"]
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)(*args)
    store = await open_store(db_url)
    ws = workspace_with(spec["trigger"])
    dispatcher = _KillingDispatcher(store, lambda: ws)
    dispatcher.kill_at = kill_at
    manager = ReceiverManager(
        store, dispatcher, lambda: ws, TemplateEngine(), lambda: spec["secrets"]
    )
    print("started", flush=True)
    await asyncio.wait_for(manager.run(asyncio.Event()), 60)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.load(sys.stdin)))
