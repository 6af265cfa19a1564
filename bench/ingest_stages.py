"""CPU per event of each stage of event-source ingest, in this process, on a fixed input.

``bench/ingest.py`` measures the whole path with a real consumer process; its rate
depends on what else the machine runs. This one feeds the same ``OUTPUT:`` lines
(``{"n": i}``, in 64 KiB chunks, as the pipe delivers them) through the real
objects of an embedded node on a temporary SQLite file (or ``--pg``), and reports CPU
seconds per event (``time.thread_time``: not wall time, so a loaded machine changes it
little):

- ``pipe``: splitting chunks into lines and decoding them (``runners.lines``);
- ``decode``: ``jsonsafe.loads`` of each line's JSON (the strict decode);
- ``line hook``: the step's line sink and the event-source hook for each line (the
  decode included): the dedup key, the cursor check, the pending list;
- ``prepare``: ``Dispatcher.prepare_keyed`` of batches of ``--batch`` events (input
  check, flow, one ``NewJob`` each);
- ``store, loop``: ``Dispatcher.commit`` of those batches, on the event loop (row
  encoding, ids, outcomes);
- ``store, writer``: the same commits' database work (SQLite's writer thread; on
  PostgreSQL the server's own CPU is not counted);
- ``end to end``: all of it at once (lines through the hook, its flusher committing):
  CPU of the loop thread and of every other thread of this process, per event.

    python bench/ingest_stages.py [--n 100000] [--batch 4000] [--pg URL] [--repeat 3]
                                  [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.ingest import WORKSPACE  # noqa: E402

from headwater import jsonsafe  # noqa: E402
from headwater.core.status import LogStream  # noqa: E402
from headwater.engine.step_attempt import OutputCollector  # noqa: E402
from headwater.node import Node, NodeSettings, freeze_startup_heap  # noqa: E402
from headwater.runners.lines import CHUNK_SIZE, LineSplitter, decode_line  # noqa: E402
from headwater.triggers.emitter import EventSourceLineHook  # noqa: E402
from headwater.worker.worker import WorkerSettings  # noqa: E402

MAX_LINE = 1_048_576


def chunks_of(n: int, start: int = 0) -> list[bytes]:
    data = "".join(f'OUTPUT: {{"n": {i}}}\n' for i in range(start, start + n)).encode()
    return [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process so far, by name (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name.split("_")[0] for t in threading.enumerate()}
    used: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "loop" if int(task.name) == threading.main_thread().native_id else "other"
        name = names.get(int(task.name), name) if name != "loop" else name
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return used


class _Reporter:
    """What OutputCollector needs of the step runner (nothing is logged on this input)."""

    def __init__(self, logs: Any) -> None:
        self.logs = logs

    async def system(self, job_id: str, step: str, text: str) -> None:
        raise AssertionError(text)


def make_hook(node: Node, job_id: str, batch: int) -> EventSourceLineHook:
    job: Any = SimpleNamespace(id=job_id, attempt=1)
    return EventSourceLineHook(
        job, "produce", 1, "ws/firehose", "target", {}, None, MAX_LINE, node.emitter,
        node.logs, max_batch=batch,
    )  # fmt: skip


async def stages(db_url: str, n: int, batch: int, run: int) -> dict[str, float]:
    """µs of CPU per event of each stage (one pass)."""
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws.yaml"
        ws.write_text(WORKSPACE.format(n=n))
        node = Node(ws, NodeSettings(db_url=db_url, worker=WorkerSettings(concurrency=2)))
        await node.start()
        freeze_startup_heap()
        try:
            return await _stages(node, n, batch, run)
        finally:
            await node.close()


async def _stages(node: Node, n: int, batch: int, run: int) -> dict[str, float]:
    us: dict[str, float] = {}
    chunks = chunks_of(n)

    # pipe: chunks → lines → str
    t = time.thread_time()
    lines: list[str] = []
    splitter = LineSplitter(MAX_LINE)
    for chunk in chunks:
        for raw, truncated in splitter.feed(chunk):
            lines.append(decode_line(raw, truncated))
    us["pipe"] = (time.thread_time() - t) / n * 1e6

    t = time.thread_time()
    for line in lines:
        jsonsafe.loads(line[8:])  # after "OUTPUT: "
    us["decode"] = (time.thread_time() - t) / n * 1e6

    # line hook: the collector and hook of every line; no flush runs (nothing awaits)
    hook = make_hook(node, f"stages-hook-{run}", n + 1)
    collector = OutputCollector(_Reporter(node.logs), SimpleNamespace(id="x"), "produce", hook)  # type: ignore[arg-type]
    stdout = LogStream.STDOUT
    t = time.thread_time()
    for line in lines:
        await collector(stdout, line, False)
    us["line hook"] = (time.thread_time() - t) / n * 1e6
    events = [(key, payload) for key, payload, _ in hook._pending]
    hook._pending.clear()
    hook._closing = True
    if hook._flusher is not None:
        hook._flusher.cancel()

    # prepare, then store (loop and writer threads)
    dispatcher = node.dispatcher
    parts = [events[i : i + batch] for i in range(0, n, batch)]
    t = time.thread_time()
    prepared = [
        dispatcher.prepare_keyed("target", "event_source", "ws/firehose", {}, part)
        for part in parts
    ]
    us["prepare"] = (time.thread_time() - t) / n * 1e6
    before = thread_cpu()
    t = time.thread_time()
    for p in prepared:
        await dispatcher.commit(p)
    us["store, loop"] = (time.thread_time() - t) / n * 1e6
    after = thread_cpu()
    us["store, writer"] = (
        sum(after[k] - before.get(k, 0.0) for k in after if k not in ("loop", "MainThread"))
        / n
        * 1e6
    )

    # end to end: a second run's lines through the hook, its flusher committing as the
    # emitter does under load (two batches on their way)
    hook = make_hook(node, f"stages-e2e-{run}", 4000)
    collector = OutputCollector(_Reporter(node.logs), SimpleNamespace(id="x"), "produce", hook)  # type: ignore[arg-type]
    splitter = LineSplitter(MAX_LINE)
    chunks = chunks_of(n, n)
    before = thread_cpu()
    t = time.thread_time()
    for chunk in chunks:
        for raw, truncated in splitter.feed(chunk):
            await collector(stdout, decode_line(raw, truncated), False)
        await asyncio.sleep(0)  # the pipe's next read: the flusher gets its turn
    await hook.close()
    loop_us = (time.thread_time() - t) / n * 1e6
    after = thread_cpu()
    other = sum(after[k] - before.get(k, 0.0) for k in after if k not in ("loop", "MainThread"))
    assert hook.accepted == n, f"{hook.accepted} of {n} accepted"
    us["end to end, loop"] = loop_us
    us["end to end, other threads"] = other / n * 1e6
    us["end to end, process"] = loop_us + other / n * 1e6
    return us


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=4000)
    ap.add_argument("--pg", help="a PostgreSQL URL instead of a temporary SQLite file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    runs: list[dict[str, float]] = []
    for run in range(args.repeat):
        if args.pg:
            from tests.conftest import create_pg_database, drop_pg_database

            url = await create_pg_database("hw_stages")
            try:
                runs.append(await stages(url, args.n, args.batch, run))
            finally:
                await drop_pg_database(url)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(await stages(f"sqlite:///{tmp}/stages.db", args.n, args.batch, run))
    load = os.getloadavg()
    print(f"\nCPU µs per event by stage, n={args.n:,}, {args.repeat} runs (min-max), "
          f"{'PostgreSQL' if args.pg else 'SQLite'}, load average {load[0]:.1f}")  # fmt: skip
    for stage in runs[0]:
        values = [r[stage] for r in runs]
        print(f"  {stage:28} {min(values):6.2f} - {max(values):6.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "load": load}, indent=2))


if __name__ == "__main__":
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    asyncio.run(main())
