"""Where the test suite's time goes, from the files of tests/timeline.py: the span of the
run, the sum of test wall and CPU times, each xdist worker's busy time, each xdist group
(a serial chain) with when it started and ended, and the slowest files and tests.

    HEADWATER_TIMELINE=/tmp/tl python -m pytest -p tests.timeline
    python bench/ci_timeline.py /tmp/tl [--top 40]

On CI's 2 cores the wall time is about the suite's CPU / 2 (plus the services' CPU) when
the workers keep the cores busy, or the longest chain when one group ends last.
CPU here is the test process's own plus its reaped children's (servers, workers, CLI
calls); the services (PostgreSQL, brokers) are not in it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def load(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line]
    return rows


def report(rows: list[dict[str, Any]], top: int) -> None:
    t0 = min(r["start"] for r in rows)
    span = max(r["end"] for r in rows) - t0

    def wall(r: dict[str, Any]) -> float:
        return float(r["end"] - r["start"])

    def cpu(r: dict[str, Any]) -> float:
        return float(r["cpu"] + r["children_cpu"])

    print(
        f"{len(rows)} tests, span {span:.0f} s, sum of wall {sum(map(wall, rows)):.0f} s,"
        f" sum of CPU {sum(map(cpu, rows)):.0f} s"
    )
    workers: dict[str, list[dict[str, Any]]] = defaultdict(list)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    files: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        workers[r["worker"]].append(r)
        files[r["id"].split("::")[0]].append(r)
        if "@" in r["id"].rsplit("]", 1)[-1]:
            groups[r["id"].rsplit("@", 1)[1]].append(r)
    for name, rs in sorted(workers.items()):
        last = max(r["end"] for r in rs) - t0
        busy = sum(map(wall, rs))
        print(f"worker {name}: {len(rs)} tests, busy {busy:.0f} s, last end {last:.0f} s")
    print("groups (serial chains):")
    for name, rs in sorted(groups.items(), key=lambda kv: -sum(map(wall, kv[1]))):
        first = min(r["start"] for r in rs) - t0
        last = max(r["end"] for r in rs) - t0
        print(
            f"  {name}: {len(rs)} tests, {sum(map(wall, rs)):.0f} s wall,"
            f" {sum(map(cpu, rs)):.0f} s CPU, from {first:.0f} s to {last:.0f} s"
        )
    print(f"slowest {top} files (wall, CPU, tests):")
    by_wall = sorted(files.items(), key=lambda kv: -sum(map(wall, kv[1])))
    for name, rs in by_wall[:top]:
        print(f"  {sum(map(wall, rs)):7.1f} s {sum(map(cpu, rs)):7.1f} s {len(rs):4d}  {name}")
    print(f"slowest {top} tests (wall, CPU, worker, start):")
    for r in sorted(rows, key=wall, reverse=True)[:top]:
        print(
            f"  {wall(r):6.1f} s {cpu(r):6.1f} s {r['worker']} @{r['start'] - t0:5.0f}  {r['id']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    rows = load(args.folder)
    if not rows:
        raise SystemExit(f"no timeline in {args.folder} (*.jsonl)")
    report(rows, args.top)


if __name__ == "__main__":
    main()
