"""Memory soak: ``headwater up`` fed 1,000 events/s by an event source whose targets run
a function step; its RSS sampled every few seconds. Flat is the goal.

The trigger has ``max_in_flight`` (100 by default). Afterwards the stored jobs show
whether headwater kept up (jobs created and completed per second) and whether the limit
held: the largest number of the trigger's jobs alive at once, counted from each job's
``created_at`` (stamped just before its insert commits, so this over-counts, never
under-counts) to its ``finished_at``.

    python bench/soak.py [--minutes 10] [--rate 1000] [--max-in-flight 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HEADWATER = str(Path(sys.executable).parent / "headwater")

WORKSPACE = """
actions:
  produce:
    type: script
    language: python
    script: |
      import sys, time
      rate = {rate}
      t0 = time.monotonic()
      i = 0
      while True:
          i += 1
          delay = t0 + i / rate - time.monotonic()
          if delay > 0:
              time.sleep(delay)
          sys.stdout.write('OUTPUT: {{"n": %d}}\\n' % i)
          sys.stdout.flush()
  noop:
    type: function
    function: "hw_soak_funcs:noop"
tasks:
  consumer:
    flow:
      produce: {{ action: produce }}
  target:
    input:
      n: {{ type: integer }}
    flow:
      noop: {{ action: noop }}
triggers:
  steady:
    type: event_source
    task: consumer
    target_task: target
    max_in_flight: {max_in_flight}
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _epoch(text: str) -> float:
    from datetime import UTC, datetime

    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def job_figures(db_path: Path) -> dict[str, float]:
    """Throughput and the most jobs alive at once, from the stored target jobs."""
    db = sqlite3.connect(db_path)
    try:
        rows = db.execute(
            "SELECT created_at, finished_at, status FROM jobs WHERE task = 'target'"
        ).fetchall()
    finally:
        db.close()
    marks: list[tuple[float, int]] = []
    for created, finished, _ in rows:
        marks.append((_epoch(created), 1))
        if finished is not None:
            marks.append((_epoch(finished), -1))
    marks.sort(key=lambda m: (m[0], -m[1]))  # at a tie count the start first: over-count
    alive = peak = 0
    for _, step in marks:
        alive += step
        peak = max(peak, alive)
    created = [_epoch(c) for c, _, _ in rows]
    span = (max(created) - min(created)) if len(created) > 1 else float("nan")
    completed = sum(1 for _, _, status in rows if status == "completed")
    return {
        "jobs": len(rows),
        "completed": completed,
        "created_per_s": (len(rows) - 1) / span if span == span and span else 0.0,
        "max_alive": peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--max-in-flight", type=int, default=100)
    ap.add_argument("--every", type=float, default=5, help="seconds between samples")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hw_soak_funcs.py").write_text("def noop(**kwargs):\n    return {}\n")
        ws = Path(tmp, "soak.yaml")
        ws.write_text(
            textwrap.dedent(WORKSPACE.format(rate=args.rate, max_in_flight=args.max_in_flight))
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": tmp, "NO_COLOR": "1"}
        proc = subprocess.Popen(
            [HEADWATER, "up", str(ws), "--port", str(port), "--concurrency", "32"],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples: list[tuple[float, float]] = []
        try:
            started = time.monotonic()
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(args.every)
                if proc.poll() is not None:
                    raise SystemExit(f"headwater up exited with {proc.returncode}")
                samples.append((time.monotonic() - started, rss_mb(proc.pid)))
                print(f"  {samples[-1][0]:7.0f}s  RSS {samples[-1][1]:8.1f} MB", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        figures = job_figures(Path(tmp, ".headwater", "headwater.db"))
    warm = [s for s in samples if s[0] >= min(60.0, args.minutes * 60 / 3)] or samples
    n = len(warm)
    mean_t = sum(t for t, _ in warm) / n
    mean_r = sum(r for _, r in warm) / n
    var = sum((t - mean_t) ** 2 for t, _ in warm) or 1.0
    slope = sum((t - mean_t) * (r - mean_r) for t, r in warm) / var * 60  # MB per minute
    result = {
        "minutes": args.minutes,
        "rate": args.rate,
        "rss_start_mb": samples[0][1],
        "rss_end_mb": samples[-1][1],
        "rss_max_mb": max(r for _, r in samples),
        "slope_mb_per_min_after_warmup": slope,
        "max_in_flight": args.max_in_flight,
        **figures,
    }
    print(
        f"\nsoak {args.minutes:g} min at {args.rate}/s: RSS {result['rss_start_mb']:.1f} →"
        f" {result['rss_end_mb']:.1f} MB (max {result['rss_max_mb']:.1f}),"
        f" slope after warm-up {slope:+.2f} MB/min"
    )
    print(
        f"jobs: {figures['jobs']:,} created ({figures['created_per_s']:,.0f}/s),"
        f" {figures['completed']:,} completed; most alive at once {figures['max_alive']}"
        f" (max_in_flight {args.max_in_flight})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
