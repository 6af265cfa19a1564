"""``type: function`` actions as a user writes them: the module next to the workspace,
sync and async callables, the input as keyword arguments, the return value as the step
output, and an exception's traceback in the job log."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

from headwater.store.base import JobStatus
from tests.integration.test_engine import start_node

FUNCS = """
import asyncio
import functools
import threading

async def total(items, tax=0.0):
    await asyncio.sleep(0)
    return {"total": round(sum(items) * (1 + tax), 2)}

def where(**kwargs):
    return {"thread": threading.current_thread().name != "MainThread", "got": sorted(kwargs)}

async def _greet(name, greeting):
    return {"text": f"{greeting}, {name}"}

greet = functools.partial(_greet, greeting="hej")

def broken(order_id):
    raise KeyError(f"order {order_id} has no customer")

def not_json():
    return {"when": object()}
"""


async def test_functions_next_to_the_workspace_run_in_the_worker(
    tmp_path: Path, db_url: str
) -> None:
    module = f"hw_funcs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(FUNCS))
    assert str(tmp_path) not in sys.path  # found because it sits next to the workspace
    node = await start_node(
        tmp_path,
        db_url,
        f"""
        actions:
          total: {{ type: function, function: "{module}:total" }}
          where: {{ type: function, function: "{module}:where" }}
          greet: {{ type: function, function: "{module}:greet" }}
          broken: {{ type: function, function: "{module}:broken" }}
          not_json: {{ type: function, function: "{module}:not_json" }}
        tasks:
          checkout:
            input: {{ items: {{ type: array }} }}
            flow:
              sum: {{ action: total, input: {{ items: "{{{{ input.items }}}}", tax: 0.25 }} }}
              where:
                action: where
                depends_on: sum
                input: {{ a: 1, b: "{{{{ sum.output.total }}}}" }}
              greet: {{ action: greet, input: {{ name: ada }} }}
          fails:
            flow:
              s: {{ action: broken, input: {{ order_id: 7 }} }}
          odd:
            flow:
              s: {{ action: not_json }}
        """,
    )
    try:
        job = await node.run_one("checkout", {"items": [1, 2, 3]})
        assert job.status is JobStatus.COMPLETED, job.error
        assert job.output == {
            "sum": {"total": 7.5},
            "where": {"thread": True, "got": ["a", "b"]},  # sync: off the event loop
            "greet": {"text": "hej, ada"},
        }
        job = await node.run_one("fails", {})
        assert job.status is JobStatus.FAILED
        assert job.error == "step 's' failed: raised KeyError: 'order 7 has no customer'"
        lines = [r.line for r in await node.store.get_logs(job.id)]
        assert any("Traceback (most recent call last)" in line for line in lines)
        assert any(f"{module}.py" in line and "in broken" in line for line in lines)
        job = await node.run_one("odd", {})
        assert job.status is JobStatus.FAILED
        assert "returned a value that is not JSON" in (job.error or "")
    finally:
        await node.close()
        sys.modules.pop(module, None)
        if str(tmp_path.resolve()) in sys.path:
            sys.path.remove(str(tmp_path.resolve()))


async def test_a_reload_runs_the_edited_function_module(tmp_path: Path, db_url: str) -> None:
    module = f"hw_funcs_{uuid.uuid4().hex[:8]}"
    helper = f"{module}_helper"
    (tmp_path / f"{helper}.py").write_text("WORD = 'one'\n")
    source = tmp_path / f"{module}.py"
    source.write_text(
        f"from {helper} import WORD\n\ndef version():\n    return {{'v': 1, 'w': WORD}}\n"
    )
    node = await start_node(
        tmp_path,
        db_url,
        f"""
        actions:
          version: {{ type: function, function: "{module}:version" }}
        tasks:
          v:
            flow:
              s: {{ action: version }}
        """,
    )
    try:
        job = await node.run_one("v", {})
        assert job.output == {"s": {"v": 1, "w": "one"}}, job.error
        # The same size and mtime second as before: only a content check would see it.
        source.write_text(source.read_text().replace("'v': 1", "'v': 2"))
        (tmp_path / f"{helper}.py").write_text("WORD = 'two'\n")
        await node.reload_workspace()
        job = await node.run_one("v", {})
        assert job.output == {"s": {"v": 2, "w": "two"}}, job.error
        # A broken edit fails the step with the error; fixing it works again.
        source.write_text("def version(:\n")
        await node.reload_workspace()
        job = await node.run_one("v", {})
        assert job.status is JobStatus.FAILED
        assert "cannot load function" in (job.error or "") and "invalid syntax" in (job.error or "")
        source.write_text("def version():\n    return {'v': 3}\n")
        await node.reload_workspace()
        job = await node.run_one("v", {})
        assert job.output == {"s": {"v": 3}}, job.error
    finally:
        await node.close()
        for name in (module, helper):
            sys.modules.pop(name, None)
        if str(tmp_path.resolve()) in sys.path:
            sys.path.remove(str(tmp_path.resolve()))


CHATTY = """
import asyncio
import logging
import asyncio
import sys
import threading
import time

_arrived = {"n": 0}
_barrier = threading.Barrier(2)
log = logging.getLogger("user.chatty")

def sync_chatty(tag, token):
    print(f"{tag} start")
    log.warning("%s warns with %s", tag, token)
    _barrier.wait(timeout=20)  # the other sync job is in its thread at the same time
    print(f"{tag} end", file=sys.stderr)
    sys.stdout.write(f"{tag} no newline")
    return {"tag": tag}

async def async_chatty(tag, token):
    print(f"{tag} start")
    log.warning("%s warns with %s", tag, token)
    _arrived["n"] += 1
    deadline = time.monotonic() + 20
    while _arrived["n"] < 2 and time.monotonic() < deadline:  # both on the loop at once
        await asyncio.sleep(0.01)
    print(f"{tag} end", file=sys.stderr)
    return {"tag": tag}
"""


async def test_print_and_logging_of_concurrent_functions_go_to_their_own_job_masked(
    tmp_path: Path, db_url: str, capsys: Any
) -> None:
    module = f"hw_chatty_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(CHATTY))
    secret = "pa55-w0rd-zz"
    node = await start_node(
        tmp_path,
        db_url,
        f"""
        secrets:
          token: "{secret}"
        actions:
          sync_chatty: {{ type: function, function: "{module}:sync_chatty" }}
          async_chatty: {{ type: function, function: "{module}:async_chatty" }}
        tasks:
          s:
            input: {{ tag: {{ type: string }} }}
            flow:
              f:
                action: sync_chatty
                input: {{ tag: "{{{{ input.tag }}}}", token: "{{{{ secret.token }}}}" }}
          a:
            input: {{ tag: {{ type: string }} }}
            flow:
              f:
                action: async_chatty
                input: {{ tag: "{{{{ input.tag }}}}", token: "{{{{ secret.token }}}}" }}
        """,
    )
    try:
        jobs = await asyncio.gather(
            node.run_one("s", {"tag": "sync-1"}),
            node.run_one("s", {"tag": "sync-2"}),
            node.run_one("a", {"tag": "async-1"}),
            node.run_one("a", {"tag": "async-2"}),
        )
        tags = ("sync-1", "sync-2", "async-1", "async-2")
        for job, tag in zip(jobs, tags, strict=True):
            assert job.status is JobStatus.COMPLETED, job.error
            logs = [(r.stream.value, r.line) for r in await node.store.get_logs(job.id)]
            expected = [
                ("stdout", f"{tag} start"),
                ("stderr", f"WARNING user.chatty: {tag} warns with ••••••"),
                ("stderr", f"{tag} end"),
            ]
            if tag.startswith("sync"):
                expected.append(("stdout", f"{tag} no newline"))
            assert sorted(logs) == sorted(expected), logs
        out, err = capsys.readouterr()
        for tag in tags:  # not on the server's streams
            assert tag not in out and tag not in err
        assert secret not in out + err
    finally:
        await node.close()
        sys.modules.pop(module, None)
        if str(tmp_path.resolve()) in sys.path:
            sys.path.remove(str(tmp_path.resolve()))
