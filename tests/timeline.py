"""A pytest plugin that writes each test's timeline: which xdist worker ran it, when, and
the CPU it cost (this process plus the children it waited for: the ``headwater``
servers, workers and CLI calls a test starts). For deciding where CI's time goes;
``python bench/ci_timeline.py DIR`` reads the files.

    HEADWATER_TIMELINE=/tmp/timeline python -m pytest -p tests.timeline

(``python -m``: the repository root must be on the path.) Not loaded unless asked for;
each worker appends to ``DIR/<worker>.jsonl``.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Generator
from typing import IO

import pytest

_out: IO[str] | None = None


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _file() -> IO[str]:
    global _out
    if _out is None:
        folder = os.environ.get("HEADWATER_TIMELINE", "timeline")
        os.makedirs(folder, exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        _out = open(os.path.join(folder, f"{worker}.jsonl"), "a")  # noqa: SIM115
    return _out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    started = time.time()
    own0, children0 = _cpu()
    yield
    own1, children1 = _cpu()
    row = {
        "id": item.nodeid,
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        "start": started,
        "end": time.time(),
        "cpu": round(own1 - own0, 3),
        "children_cpu": round(children1 - children0, 3),
    }
    out = _file()
    out.write(json.dumps(row) + "\n")
    out.flush()
