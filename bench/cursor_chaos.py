"""Event-source cursors through kill -9s, at full size (the CI test,
tests/e2e/test_cursor_chaos.py, runs 3,000 events and 6 kills): a consumer that resumes
after HEADWATER_CURSOR emits N numbered events through ``headwater up`` (SQLite, no
``dedup_key``) while the consumer and headwater are SIGKILLed in turn; prints a table
of lost and duplicated jobs per run.

    python bench/cursor_chaos.py [--events 100000] [--kills 10] [--runs 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.e2e.cursor_chaos import ChaosReport, run_chaos  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--kills", type=int, default=10, help="every third kill is headwater's")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--pace", type=float, default=0.005, help="seconds after each 100 events")
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="also run a consumer without cursors (resumes after what it printed)",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    plan = ["headwater" if i % 3 == 2 else "consumer" for i in range(args.kills)]
    step = max(1, args.events // (args.kills + 1))
    reports: list[tuple[str, ChaosReport]] = []
    modes = [True, False] if args.baseline else [True]
    for _ in range(args.runs):
        for cursors in modes:
            with tempfile.TemporaryDirectory(prefix="cursor-chaos-") as tmp:
                report = run_chaos(
                    Path(tmp), args.events, plan, args.pace, step, 1800, cursors=cursors
                )
            reports.append(("cursor" if cursors else "no cursor", report))
    print(
        "| run | consumer | events | kills (consumer/headwater) | jobs | lost | duplicate | "
        "consumer runs logged | seconds |\n|---|---|---|---|---|---|---|---|---|"
    )
    for i, (mode, r) in enumerate(reports, 1):
        print(
            f"| {i} | {mode} | {r.events:,} | {r.kills['consumer']}/{r.kills['headwater']} | "
            f"{r.jobs:,} | {r.lost} | {r.duplicated} | {r.runs} | {r.seconds:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for _, r in reports], indent=2))
    if any(r.lost or r.duplicated for mode, r in reports if mode == "cursor"):
        sys.exit(1)


if __name__ == "__main__":
    main()
