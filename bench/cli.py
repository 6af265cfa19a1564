"""Start-up time of the ``headwater`` command line: each command run N times as a user runs
it (a new process each time), min / median / max wall time, next to a bare ``python -c
pass`` in the same run (the interpreter's own floor), and the modules each one imported.

``jobs`` and ``logs`` talk to a port where nothing listens, so they measure the start-up
and a refused connection, not a server. Goal: every command under 300 ms.

    python bench/cli.py [--runs 5] [--json PATH] [--src OTHER/src]

``--src`` times another checkout (say the previous release) the same way. Wall time on a
loaded machine swings; the CPU time (user + system of the child) is steadier.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_MS = 300.0
HEAVY = ("sqlalchemy", "fastapi", "uvicorn", "pydantic", "httpx", "structlog", "jinja2")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def commands() -> dict[str, list[str]]:
    server = f"http://127.0.0.1:{_closed_port()}"
    # What the `headwater` console script runs (works for checkouts without __main__.py).
    hw = [sys.executable, "-c", "from headwater.cli import main; main()"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "--help": [*hw, "--help"],
        "--version": [*hw, "--version"],
        "jobs": [*hw, "jobs", "--server", server],
        "logs": [*hw, "logs", "0190f3a0-0000-7000-8000-000000000000", "--server", server],
        "triggers PATH": [*hw, "triggers", str(REPO / "examples" / "orders")],
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


def measure(runs: int, src: Path) -> list[dict[str, object]]:
    env = {**os.environ, "PYTHONPATH": str(src), "NO_COLOR": "1"}
    rows: list[dict[str, object]] = []
    for name, argv in commands().items():
        times, cpus = [], []
        for _ in range(runs):
            cpu, start = _cpu(), time.perf_counter()
            subprocess.run(argv, env=env, capture_output=True)
            times.append((time.perf_counter() - start) * 1000)
            cpus.append((_cpu() - cpu) * 1000)
        count, heavy = _imports(argv, env)
        rows.append(
            {
                "command": name,
                "min_ms": min(times),
                "median_ms": statistics.median(times),
                "max_ms": max(times),
                "cpu_median_ms": statistics.median(cpus),
                "modules": count,
                "heavy": heavy,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the code to time")
    args = parser.parse_args()
    runs = max(args.runs, 3)
    rows = measure(runs, args.src.resolve())
    load = os.getloadavg()[0]
    print(f"headwater CLI start-up ({args.src}), {runs} runs each, load average {load:.1f}")
    print(
        f"{'command':<16} {'min ms':>8} {'median':>8} {'max':>8} {'cpu med':>8} {'modules':>8}"
        "  heavy imports"
    )
    for r in rows:
        goal = "" if r["command"] == "python -c pass" or r["median_ms"] < GOAL_MS else "  > goal"  # type: ignore[operator]
        print(
            f"{r['command']:<16} {r['min_ms']:>8.0f} {r['median_ms']:>8.0f} {r['max_ms']:>8.0f}"
            f" {r['cpu_median_ms']:>8.0f} {r['modules']:>8}  {', '.join(r['heavy']) or '-'}{goal}"  # type: ignore[arg-type]
        )
    if args.json:
        args.json.write_text(json.dumps({"load": load, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
