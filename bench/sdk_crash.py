"""The crash-injection run at full size (the test, tests/e2e/test_sdk_crash.py, runs
10,000 events): N events through the outbox pipeline while consumer workers, the
supervisor and the publisher are SIGKILLed at random and a private Redis is restarted
empty once; then how often each event was applied, per guarantee.

    python bench/sdk_crash.py [--events 100000] [--db sqlite|postgresql|URL] [--seed 7]
                              [--kill-every 3,8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402
from tests.e2e.sdk_chaos import CONSUMERS, run_chaos  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--db", default="postgresql")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--kill-every", default="3,8", help="seconds between kills, min,max (the test: 1,2.5)"
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    low, _, high = args.kill_every.partition(",")
    with tempfile.TemporaryDirectory() as tmp:
        created = None
        if args.db == "sqlite":
            url = f"sqlite:///{tmp}/crash.db"
        elif args.db == "postgresql":
            url = created = asyncio.run(create_pg_database("hw_crash"))
        else:
            url = args.db
        try:
            report = run_chaos(
                url,
                Path(tmp),
                args.events,
                seed=args.seed,
                kill_every=(float(low), float(high)),
                timeout=max(300.0, args.events / 50),
                produce_secs=max(4.0, args.events / 2500),
            )
        finally:
            if created is not None:
                asyncio.run(drop_pg_database(created))
    summary = report.summary()
    ok = (
        summary["exactly"]["missing"] == 0
        and summary["exactly"]["duplicates"] == 0
        and summary["at_least"]["missing"] == 0
        and summary["at_most"]["duplicates"] == 0
    )
    print(json.dumps(summary, indent=2))
    for name in CONSUMERS:
        row = summary[name]
        print(
            f"{name:9} applied {row['applied']:>8,}  missing {row['missing']:>6,}"
            f"  duplicates {row['duplicates']:>6,}"
        )
    print("guarantees held" if ok else "GUARANTEE VIOLATED")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
