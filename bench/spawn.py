"""Process spawning: bare asyncio next to ``LocalRunner.run``, per way of reaping children.

    python bench/spawn.py [--n 1000] [--rounds 3] [--profile]

Each row runs ``/bin/sh -c true`` N times at concurrency 1 and 8 and reports spawns per
second (median of the rounds, rounds interleaved so that machine noise hits every row
alike):

- ``asyncio, no pipes``: ``create_subprocess_exec`` with stdout/stderr to /dev/null,
  then ``wait()`` — the floor PEERS.md quotes (966/s and 1,291/s there).
- ``asyncio, piped``: the same with both pipes read to EOF, which is the work a runner
  must do.
- ``LocalRunner sh``: ``run()`` of a ``script: "true"``, ``language: sh`` step with a
  no-op sink — the same child as the asyncio rows, plus the runner's work (an
  environment of os.environ + step env + ids, which Popen encodes per variable, two
  line pumps, timeout and cancel watching, group kill, reap).
- ``LocalRunner bash``: the same with ``language: shell``, which runs bash: bash starts
  ~0.6 ms slower than dash here, a cost of the child, not of the runner.

``cpu`` is this process's CPU time per spawn (fork/exec up to the exec, asyncio, the
runner, reaper threads): unlike the rates it hardly moves when other processes share
the machine.

asyncio rows run under the policy's default ``ThreadedChildWatcher`` and under a
``PidfdChildWatcher`` installed on the policy (acceptable in a benchmark, not in a
library); LocalRunner rows use its own reapers (``thread`` and ``pidfd``), which never
touch the policy. ``+wall`` is the time per spawn ``LocalRunner sh`` adds to the piped
asyncio row of the same reaping kind. Goal (PEERS.md): shell-step jobs ≥ 900/s, so the
runner's share must stay a small fraction of a millisecond.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

from headwater.runners.base import StepSpec
from headwater.runners.local import LocalRunner
from headwater.runners.process import Reaper, pidfd_available
from headwater.store.base import LogStream
from headwater.workspace.models import Language

ARGV = ("/bin/sh", "-c", "true")
PIPE = asyncio.subprocess.PIPE
DEVNULL = asyncio.subprocess.DEVNULL


async def raw_no_pipes() -> None:
    proc = await asyncio.create_subprocess_exec(
        *ARGV, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, start_new_session=True
    )
    await proc.wait()


async def raw_piped() -> None:
    proc = await asyncio.create_subprocess_exec(
        *ARGV, stdin=DEVNULL, stdout=PIPE, stderr=PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    await asyncio.gather(proc.stdout.read(), proc.stderr.read())
    await proc.wait()


async def noop_sink(stream: LogStream, line: str, truncated: bool) -> None:
    return None


def runner_call(
    runner: LocalRunner, workdir: Path, language: Language
) -> Callable[[], Awaitable[None]]:
    spec = StepSpec(
        job_id="bench", step="true", workdir=workdir, env={}, script="true", language=language
    )
    cancel = asyncio.Event()

    async def call() -> None:
        result = await runner.run(spec, noop_sink, cancel)
        assert result.exit_code == 0, result

    return call


async def rate(
    call: Callable[[], Awaitable[None]], n: int, concurrency: int
) -> tuple[float, float]:
    """Spawns per second, and this process's CPU seconds per spawn (all threads)."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started), (time.process_time() - cpu) / n


def use_watcher(kind: str) -> None:
    """Install the asyncio child watcher a row needs (Python < 3.12 API)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = asyncio.get_event_loop_policy()
        watcher: asyncio.AbstractChildWatcher = (
            asyncio.PidfdChildWatcher() if kind == "pidfd" else asyncio.ThreadedChildWatcher()
        )
        watcher.attach_loop(asyncio.get_running_loop())
        policy.set_child_watcher(watcher)


async def main(n: int, rounds: int, profile: bool) -> None:
    workdir = Path(tempfile.gettempdir())
    kinds = ["thread", *(["pidfd"] if pidfd_available() else [])]
    runners = {
        k: LocalRunner(reaper=Reaper(k), cache_dir=workdir / "hw-bench-cache") for k in kinds
    }
    rows: list[tuple[str, str, Callable[[], Awaitable[None]]]] = []
    for kind in kinds:
        rows.append(("asyncio, no pipes", kind, raw_no_pipes))
        rows.append(("asyncio, piped", kind, raw_piped))
        rows.append(("LocalRunner sh", kind, runner_call(runners[kind], workdir, Language.SH)))
        rows.append(("LocalRunner bash", kind, runner_call(runners[kind], workdir, Language.SHELL)))
    results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for _name, kind, call in rows:  # warm-up: imports, caches, first forks
        use_watcher(kind)
        await rate(call, 50, 8)
    for _ in range(rounds):
        for name, kind, call in rows:
            use_watcher(kind)
            for concurrency in (1, 8):
                results.setdefault((name, kind, concurrency), []).append(
                    await rate(call, n, concurrency)
                )
    use_watcher("thread")

    version = sys.version.split()[0]
    print(f"\n/bin/sh -c true, {n} spawns a measurement, {rounds} rounds, Python {version}")
    print(
        "rate: spawns/s, median/best round (best ≈ a quiet machine); cpu: this process's"
        " CPU per spawn, median; +wall: time per spawn 'LocalRunner sh' adds to 'asyncio, piped'"
    )
    header = (
        f"{'what':<18} {'reaping':<14} {'rate c1':>11} {'rate c8':>11}"
        f" {'cpu c1':>8} {'cpu c8':>8} {'+wall c1':>9} {'+wall c8':>9}"
    )
    print(header)
    print("-" * len(header))

    def med(name: str, kind: str, c: int, i: int) -> float:
        return statistics.median(r[i] for r in results[(name, kind, c)])

    def best(name: str, kind: str, c: int) -> float:
        return max(r[0] for r in results[(name, kind, c)])

    for name, kind, _ in rows:
        rates = [f"{med(name, kind, c, 0):.0f}/{best(name, kind, c):.0f}" for c in (1, 8)]
        cpus = [med(name, kind, c, 1) * 1e6 for c in (1, 8)]
        over = ["", ""]
        if name == "LocalRunner sh":
            base = [med("asyncio, piped", kind, c, 0) for c in (1, 8)]
            mine = [med(name, kind, c, 0) for c in (1, 8)]
            over = [f"{(1 / m - 1 / b) * 1e6:+.0f}µs" for m, b in zip(mine, base, strict=True)]
        reaping = kind if name.startswith("LocalRunner") else f"{kind} watcher"
        print(
            f"{name:<18} {reaping:<14} {rates[0]:>11} {rates[1]:>11}"
            f" {cpus[0]:>6.0f}µs {cpus[1]:>6.0f}µs {over[0]:>9} {over[1]:>9}"
        )

    if profile:
        kind = kinds[-1]
        call = runner_call(runners[kind], workdir, Language.SH)
        prof = cProfile.Profile()
        prof.enable()
        await rate(call, n, 8)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
        print(f"\nprofile of LocalRunner.run ({kind}), concurrency 8, by own time:")
        print(out.getvalue())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="spawns per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile the runner afterwards")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.profile))
