"""A headwater receiver process that SIGKILLs itself at a chosen point of its first batch.

Run by test_crash.py: ``python -m tests.integration.receivers.crash_child DB_URL KILL_AT``
with the trigger and secrets as JSON on stdin. KILL_AT is ``before_commit`` (messages
received, no job written yet) or ``after_commit`` (jobs committed, broker not yet
acknowledged; the child prints how many first): the two windows where a crash could
lose or duplicate a message.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import sys
from typing import Any

from headwater.dispatch.dispatcher import Dispatcher, DispatchOutcome, PreparedBatch
from headwater.store.sql import open_store
from headwater.triggers.receivers.manager import ReceiverManager
from headwater.workspace.templating import TemplateEngine
from tests.integration.receivers.conftest import workspace_with


class _KillingDispatcher(Dispatcher):
    kill_at = "before_commit"

    async def commit(
        self, batch: PreparedBatch, cursor: tuple[str, str] | None = None
    ) -> list[DispatchOutcome]:
        if batch.jobs and self.kill_at == "before_commit":
            os.kill(os.getpid(), signal.SIGKILL)
        outcomes = await super().commit(batch, cursor)
        if batch.jobs and self.kill_at == "after_commit":
            print(f"committed {len(batch.jobs)}", flush=True)  # in one transaction
            os.kill(os.getpid(), signal.SIGKILL)
        return outcomes


async def run_and_kill(
    db_url: str,
    kill_at: str,
    trigger: dict[str, Any],
    secrets: dict[str, str],
    setup: list[Any] | None = None,
    committed: list[int] | None = None,
) -> int | None:
    """Run this module as a child process with ``trigger``; its exit code (-SIGKILL when
    it reached its first batch). ``setup``: ``["module:function", *args]`` the child calls
    first (a harness that fakes a client library installs its fake there). ``committed``
    is given the size of the batch committed before an ``after_commit`` kill."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.receivers.crash_child",
        db_url,
        kill_at,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    spec = {"trigger": trigger, "secrets": secrets, "setup": setup}
    out, _ = await child.communicate(json.dumps(spec).encode())
    if committed is not None:
        for line in out.decode().splitlines():
            if line.startswith("committed "):
                committed.append(int(line.split()[1]))
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
