"""Start-up time of the ``headwater`` command line: each command run N times as a user runs
it (a new process each time), min / median / max wall time and the median CPU time, next
to a bare ``python -c pass`` in the same run (the interpreter's own floor), and the
modules each one imported.

``jobs``, ``logs`` and ``triggers`` talk to a small canned server in this process (one
job, one log line, one trigger), so they measure the whole command: start-up, one HTTP
request, the printed table. ``jobs (no server)`` is the refused-connection path. Goal:
``--help``, ``--version``, ``jobs``, ``logs`` and ``triggers`` under 300 ms.

    python bench/cli.py [--runs 5] [--json PATH] [--src OTHER/src] [--vs BASE/src]

``--src`` times another checkout; ``--vs`` times a second one in turn with it (A B A B,
run by run) and prints both and the ratio A/B of the medians, so a before/after holds
when the machine's load drifts. Wall time on a loaded machine swings; the CPU time (user
+ system of the child) is steadier.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.canned_api import JOB_ID, serve_canned  # noqa: E402

GOAL_MS = 300.0
GOAL_COMMANDS = ("--help", "--version", "jobs", "logs", "triggers")
HEAVY = (
    "sqlalchemy",
    "fastapi",
    "uvicorn",
    "pydantic",
    "httpx",
    "rich",
    "asyncio",
    "structlog",
    "jinja2",
    "yaml",
)


def commands(server: str) -> dict[str, list[str]]:
    closed = "http://127.0.0.1:9"  # discard: nothing listens
    # What the `headwater` console script runs (works for checkouts without __main__.py).
    hw = [sys.executable, "-c", "from headwater.cli import main; main()"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "--help": [*hw, "--help"],
        "--version": [*hw, "--version"],
        "jobs": [*hw, "jobs", "--server", server],
        "logs": [*hw, "logs", JOB_ID, "--server", server],
        "triggers": [*hw, "triggers", "--server", server],
        "jobs (no server)": [*hw, "jobs", "--server", closed],
        "validate PATH": [*hw, "validate", str(REPO / "examples" / "orders")],
    }


def _imports(argv: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """How many modules the command imported, and which of HEAVY."""
    proc = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True
    )
    names = [
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ][1:]  # the first line is the header
    heavy = sorted({n.split(".")[0] for n in names if n.split(".")[0] in HEAVY})
    return len(names), heavy


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "NO_COLOR": "1", "COLUMNS": "100"}


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    cpu, start = _cpu(), time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True)
    return (time.perf_counter() - start) * 1000, (_cpu() - cpu) * 1000


@dataclass(frozen=True)
class Row:
    command: str
    min_ms: float
    median_ms: float
    max_ms: float
    cpu_median_ms: float
    modules: int
    heavy: list[str]


def _row(
    name: str, times: list[float], cpus: list[float], argv: list[str], env: dict[str, str]
) -> Row:
    count, heavy = _imports(argv, env)
    med = statistics.median
    return Row(name, min(times), med(times), max(times), med(cpus), count, heavy)


def measure(runs: int, srcs: list[Path], server: str) -> list[list[Row]]:
    """One list of rows per checkout; the checkouts alternate run by run."""
    envs = [_env(src) for src in srcs]
    result: list[list[Row]] = [[] for _ in srcs]
    for name, argv in commands(server).items():
        for env in envs:
            _time(argv, env)  # warm-up: the file cache, the .pyc files
        times: list[list[float]] = [[] for _ in srcs]
        cpus: list[list[float]] = [[] for _ in srcs]
        for _ in range(runs):
            for i, env in enumerate(envs):
                wall, cpu = _time(argv, env)
                times[i].append(wall)
                cpus[i].append(cpu)
        for i, env in enumerate(envs):
            result[i].append(_row(name, times[i], cpus[i], argv, env))
    return result


def _print(title: str, rows: list[Row]) -> None:
    print(title)
    print(
        f"  {'command':<17} {'min ms':>7} {'median':>7} {'max':>7} {'cpu med':>8} {'modules':>8}"
        "  heavy imports"
    )
    for r in rows:
        over = r.command in GOAL_COMMANDS and r.median_ms >= GOAL_MS
        print(
            f"  {r.command:<17} {r.min_ms:>7.0f} {r.median_ms:>7.0f} {r.max_ms:>7.0f}"
            f" {r.cpu_median_ms:>8.0f} {r.modules:>8}  {', '.join(r.heavy) or '-'}"
            + ("  > goal" if over else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the code to time")
    parser.add_argument("--vs", type=Path, help="a second checkout's src, timed in turn")
    args = parser.parse_args()
    runs = max(args.runs, 3)
    srcs = [args.src.resolve(), *([args.vs.resolve()] if args.vs else [])]
    with serve_canned() as server:
        results = measure(runs, srcs, server)
    load = os.getloadavg()
    print(
        f"headwater CLI start-up, {runs} runs each, goal {GOAL_MS:.0f} ms;"
        f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )
    for src, rows in zip(srcs, results, strict=True):
        _print(f"A: {src}" if src == srcs[0] else f"B: {src}", rows)
    if args.vs:
        print("A/B, medians:  wall  cpu")
        for a, b in zip(*results, strict=True):
            wall = a.median_ms / b.median_ms
            cpu = a.cpu_median_ms / max(b.cpu_median_ms, 1.0)
            print(f"  {a.command:<17} {wall:>5.2f} {cpu:>5.2f}")
    if args.json:
        by_src = {str(s): [asdict(r) for r in rows] for s, rows in zip(srcs, results, strict=True)}
        out = {"load": load, "runs": runs, "results": by_src}
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
