"""Kafka messages each starting a workflow while ``headwater up`` (the receiver's
process, also the worker) is SIGKILLed: workflows, duplicates, time (the CI test
tests/e2e/test_workflow_kafka_chaos.py runs 300 messages and 2 kills).

    python bench/workflow_kafka_chaos.py [--messages 10000] [--kills 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402
from tests.e2e.wf_kafka_chaos import run_chaos  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    # `headwater up` must import this checkout, whatever its working directory.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p
    )
    url = asyncio.run(create_pg_database("hw_bench_wfk"))
    try:
        with tempfile.TemporaryDirectory() as folder:
            report = run_chaos(Path(folder), url, args.messages, args.kills, args.timeout)
    finally:
        asyncio.run(drop_pg_database(url))
    load = os.getloadavg()
    print(report.summary())
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ok = report.workflows == report.distinct_ids == report.completed == args.messages
    ok = ok and report.effects == report.distinct_effects == args.messages
    print("OK: every message one workflow, no duplicate" if ok else "FAILED")
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "load": load}, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
