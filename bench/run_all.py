"""Every benchmark in one run, then one summary table with the ratios that matter:
ours against the machine's limits and against each peer on the same PostgreSQL.

    python bench/run_all.py [--quick] [--only limits,engine,ingest,latency,receivers,peers,soak]

Figures go to ``bench/results/<date>/<name>.json``. Peers need their own environment
first: ``bash bench/peers/setup.sh``. ``--quick`` sizes everything to a few minutes in
all (and the soak to one minute).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS_PY = BENCH / ".peers-venv" / "bin" / "python"
sys.path.insert(0, str(ROOT))

from tests.conftest import create_pg_database, drop_pg_database  # noqa: E402


def sizes(quick: bool) -> dict[str, list[str]]:
    if quick:
        return {
            "limits": ["--n", "1000", "--rows", "20000"],
            "engine": ["--n", "1000", "--seconds", "3"],
            "ingest": ["--n", "30000"],
            "latency": ["--rates", "100,1000", "--seconds", "3"],
            "receivers": ["--n", "2000", "--seconds", "3"],
            "soak": ["--minutes", "1"],
        }
    return {
        "limits": [],
        "engine": ["--n", "2000", "--seconds", "5"],
        "ingest": ["--n", "100000"],
        "latency": ["--rates", "100,1000", "--seconds", "10"],
        "receivers": ["--n", "5000", "--seconds", "5"],
        "soak": ["--minutes", "10"],
    }


def run_script(name: str, args: list[str], out: Path) -> Any:
    target = out / f"{name}.json"
    print(f"\n=== {name} ===", flush=True)
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args, "--json", str(target)],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    if done.returncode != 0 or not target.exists():
        print(f"{name} failed (exit {done.returncode})")
        return None
    return json.loads(target.read_text())


def run_peers(n: int, rates: str, seconds: float, out: Path) -> list[dict[str, Any]]:
    if not PEERS_PY.exists():
        print("peers skipped: run `bash bench/peers/setup.sh` first")
        return []
    results = []
    # (script, extra arguments, backlog size, rates): the same N and rates as ours where
    # the peer can take them; DBOS saturates below 200/s (PEERS.md), so its backlog is
    # smaller and it is also paced at 50/s; its defaults poll once a second.
    plan: list[tuple[str, list[str], int, str]] = [
        ("dbos", ["tuned"], min(n, 1000), f"50,{rates}"),
        ("dbos", ["defaults"], 0, "50"),
        ("pgqueuer", [], n, rates),
        ("procrastinate", ["10"], n, rates),
        ("procrastinate", ["1"], min(n, 1000), rates.split(",")[0]),
        ("faststream", [], n, rates),
    ]
    for peer, extra, count, at in plan:
        print(f"\n=== peer {peer} {' '.join(extra)} ===", flush=True)
        if peer == "faststream":
            target = "redis://127.0.0.1:6379"
            url = None
        else:
            url = asyncio.run(create_pg_database(f"bench_{peer}")).replace("+asyncpg", "")
            target = url
        try:
            done = subprocess.run(
                [
                    str(PEERS_PY),
                    str(BENCH / "peers" / f"{peer}_bench.py"),
                    target,
                    str(count),
                    at,
                    str(seconds),
                    *extra,
                ],
                capture_output=True,
                text=True,
                timeout=900,
            )
            line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            if done.returncode == 0 and line.startswith("{"):
                results.append(json.loads(line))
                print(line)
            else:
                print(f"{peer} failed: {done.stderr.strip()[-300:]}")
        finally:
            if url is not None:
                asyncio.run(drop_pg_database(url))
    (out / "peers.json").write_text(json.dumps(results, indent=2))
    return results


def summary(r: dict[str, Any]) -> None:
    print("\n" + "=" * 78)
    print(f"headwater benchmarks, {dt.date.today()}, 2 cores")
    lim = r.get("limits") or {}
    eng = r.get("engine") or {}
    ing = r.get("ingest") or {}
    lat = r.get("latency") or []
    rows: list[tuple[str, str, str]] = []
    for db in ("sqlite", "postgresql"):
        if db in ing:
            raw = lim.get("sqlite_insert_per_s" if db == "sqlite" else "pg_insert_per_s")
            ratio = f"{ing[db]['events_per_s'] / ing[db]['insert_per_s']:.0%} of store insert"
            if raw:
                ratio += f", {ing[db]['events_per_s'] / raw:.0%} of bare-table insert"
            rows.append((f"ingest {db}", f"{ing[db]['events_per_s']:,.0f} events/s", ratio))
    for db in ("sqlite", "postgresql"):
        e = eng.get(db) if isinstance(eng, dict) else None
        if e:
            spawn = eng.get("raw_spawn_per_s") or lim.get("spawn_per_s_c8")
            ratio = f"{e['jobs_per_s'] / spawn:.0%} of raw spawn" if spawn else ""
            rows.append((f"shell jobs {db}", f"{e['jobs_per_s']:,.0f} jobs/s", ratio))
    for x in lat:
        rows.append(
            (
                f"latency {x['db']} @{x['rate']}/s",
                f"start p50 {x['start_p50']:.1f} / p99 {x['start_p99']:.1f} ms",
                f"function jobs {x['function_jobs_per_s']:,.0f}/s",
            )
        )
    if lim.get("notify_p50_ms") is not None:
        rows.append(("LISTEN/NOTIFY rtt", f"p50 {lim['notify_p50_ms']:.2f} ms", ""))
    for p in r.get("peers") or []:
        rows.append(
            (
                f"peer {p['peer']}",
                f"{p['processed_per_s']:,.0f} processed/s",
                f"p50 {p['start_p50_ms']:.1f} / p99 {p['start_p99_ms']:.1f} ms @{p['rate']:g}/s",
            )
        )
    soak = r.get("soak")
    if soak:
        rows.append(
            (
                "memory soak",
                f"{soak['rss_start_mb']:.0f} → {soak['rss_end_mb']:.0f} MB",
                f"{soak['slope_mb_per_min_after_warmup']:+.2f} MB/min",
            )
        )
    for name, value, note in rows:
        print(f"{name:28} {value:34} {note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    out = BENCH / "results" / dt.date.today().isoformat()
    out.mkdir(parents=True, exist_ok=True)
    plan = sizes(args.quick)
    results: dict[str, Any] = {}
    for name in ("limits", "engine", "ingest", "latency", "receivers"):
        if wanted is None or name in wanted:
            results[name] = run_script(name, plan[name], out)
    if wanted is None or "peers" in wanted:
        n = 2000 if args.quick else 5000
        results["peers"] = run_peers(n, "100,1000", 3.0 if args.quick else 5.0, out)
    if wanted is None or "soak" in wanted:
        results["soak"] = run_script("soak", plan["soak"], out)
    summary(results)
    (out / "all.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
