"""Every benchmark in one run, then one summary table with the ratios that matter:
ours against the machine's limits and against each peer on the same PostgreSQL.

    python bench/run_all.py [--quick]
                            [--only limits,engine,ingest,restart,latency,burst,receivers,
                                    peers,soak]

Figures go to ``bench/results/<date>/<name>.json``. Peers need their own environment
first: ``bash bench/peers/setup.sh``. ``--quick`` sizes everything to a few minutes in
all (and the soak to one minute).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
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
            "engine": ["--n", "1000", "--seconds", "3", "--function-n", "5000"],
            "ingest": ["--n", "30000"],
            "restart": ["--backlog", "20000", "--rounds", "3", "--load", "3"],
            "latency": ["--rates", "100,1000", "--seconds", "5"],
            "burst": ["--events", "30000", "--backlog", "15000"],
            "receivers": ["--n", "2000", "--seconds", "3"],
            "soak": ["--minutes", "1"],
        }
    return {
        "limits": [],
        "engine": ["--n", "3000", "--seconds", "5", "--function-n", "20000"],
        "ingest": ["--n", "100000"],
        "restart": ["--backlog", "100000", "--rounds", "3"],
        "latency": ["--rates", "100,1000", "--seconds", "10"],
        "burst": ["--events", "100000", "--backlog", "30000"],
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


GOALS = {  # ../shared/PEERS.md, "Our goals against these"
    "ingest": {"sqlite": 60_000, "postgresql": 30_000},
    "ingest_vs_raw": 0.66,  # issue 21: of the bare driver's insert (SQLite), of COPY (PG)
    "restart_s": 3.0,  # issue 21: kill -9 under load → /healthz 200
    "shell": 900,
    "function": 10_000,
    "latency_1000": (2.0, 10.0),
}


def _f(value: Any, digits: int = 0) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def _span(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if values else "-"


def _ratio(ours: Any, theirs: Any) -> str:
    if not ours or not theirs or ours != ours or theirs != theirs:
        return "-"
    return f"{ours / theirs:.2f}x" if ours < theirs * 10 else f"{ours / theirs:.0f}x"


def summary(r: dict[str, Any]) -> None:
    """One table of ours next to the machine's limits and the goals, one of the peers, and
    the ratios between them; every figure measured in this run."""
    lim = r.get("limits") or {}
    eng = r.get("engine") or {}
    ing = r.get("ingest") or {}
    lat = {(x["db"], x["rate"]): x for x in (r.get("latency") or [])}
    peers = r.get("peers") or []
    print("\n" + "=" * 100)
    print(f"headwater benchmarks, {dt.date.today()}, {os.cpu_count()} cores (all in this run)")
    if lim:
        print(
            f"\nlimits: spawn sh -c true {_f(lim.get('spawn_per_s_c1'))}/s (c1), "
            f"{_f(lim.get('spawn_best_per_s_c8'))}/s (c8, best watcher) | SQLite insert "
            f"bare {_f(lim.get('sqlite_insert_per_s'))}, jobs table "
            f"{_f(lim.get('sqlite_jobs_insert_per_s'))} rows/s | PostgreSQL insert bare "
            f"{_f(lim.get('pg_insert_per_s'))}, jobs table {_f(lim.get('pg_jobs_insert_per_s'))}"
            f" (COPY {_f(lim.get('pg_jobs_copy_per_s'))}) rows/s | NOTIFY rtt p50 "
            f"{_f(lim.get('notify_p50_ms'), 2)} ms"
        )
    rows: list[tuple[str, str, str, str, str]] = []
    for db, raw_key in (("sqlite", "sqlite_jobs_insert_per_s"), ("postgresql", None)):
        x = ing.get(db)
        if not x:
            continue
        # The raw insert of ingest.py's own run (same rows, fresh jobs table); else limits'.
        raw = x.get("raw_per_s") or (
            lim.get(raw_key)
            if raw_key
            else max(lim.get("pg_jobs_insert_per_s") or 0, lim.get("pg_jobs_copy_per_s") or 0)
        )
        cpu = sum((x.get("cpu_us_per_event") or {}).values())
        raw_cpu = x.get("raw_cpu_us_per_row")
        rows.append(
            (
                f"ingest {db}",
                f"{_f(x['events_per_s'])} events/s, {cpu:.1f} µs CPU",
                f">= {GOALS['ingest_vs_raw']:.2f} of raw",
                f"{x['events_per_s'] / raw:.2f} of raw" if raw else "",
                f"raw {_f(raw)} rows/s"
                + (f" at {raw_cpu:.1f} µs CPU/row" if raw_cpu is not None else "")
                + f"; {x['events_per_s'] / x['insert_per_s']:.0%} of store insert",
            )
        )
    spawn = eng.get("raw_spawn_per_s") or lim.get("spawn_best_per_s_c8")
    for db in ("sqlite", "postgresql"):
        e = eng.get(db)
        if not e:
            continue
        rows.append(
            (
                f"shell jobs {db}",
                f"{_f(e['jobs_per_s'])} jobs/s",
                f">= {GOALS['shell']:,}",
                f"{e['jobs_per_s'] / GOALS['shell']:.0%} of goal",
                f"{e['jobs_per_s'] / spawn:.0%} of raw spawn (c8)" if spawn else "",
            )
        )
        for kind in ("function", "async_function"):
            value = e.get(f"{kind}_jobs_per_s")
            if value:
                rows.append(
                    (
                        f"{kind.replace('_', ' ')} jobs {db}",
                        f"{_f(value)} jobs/s",
                        f">= {GOALS['function']:,}",
                        f"{value / GOALS['function']:.0%} of goal",
                        "",
                    )
                )
        rows.append(
            (
                f"submit -> shell step {db}",
                f"p50 {_f(e.get('p50_ms'), 2)} / p99 {_f(e.get('p99_ms'), 2)} ms",
                "",
                "",
                "jobs one at a time at the engine's --rate",
            )
        )
    p50_goal, p99_goal = GOALS["latency_1000"]
    for (db, rate), x in sorted(lat.items()):
        goal = f"<= {p50_goal:g} / {p99_goal:g} ms" if rate == 1000 else ""
        met = ""
        if rate == 1000:
            met = "met" if x["start_p50"] <= p50_goal and x["start_p99"] <= p99_goal else "missed"
        rows.append(
            (
                f"event -> step @{rate}/s {db}",
                f"p50 {_f(x['start_p50'], 2)} / p99 {_f(x['start_p99'], 2)} ms",
                goal,
                met,
                f"commit p50 {_f(x['created_p50'], 2)} ms, "
                f"completed {_f(x['function_jobs_per_s'])}/s",
            )
        )
    for x in r.get("burst") or []:
        if not x.get("burst_events"):
            continue
        rows.append(
            (
                f"execution during a burst {x['db']}",
                f"{x['ratio']:.2f} of steady",
                ">= 0.8",
                "met" if x["ratio"] >= 0.8 else "missed",
                f"{_f(x['during']['per_s'])} vs {_f(x['steady']['per_s'])} jobs/s, "
                f"ingest {_f(x['ingest_per_s'])} events/s",
            )
        )
    for db, rounds in (r.get("restart") or {}).items():
        healthy = [x["healthy_s"] for x in rounds]
        first = [x["first_job_s"] for x in rounds if x["first_job_s"] is not None]
        ingesting = [x["ingesting_s"] for x in rounds if x["ingesting_s"] is not None]
        rows.append(
            (
                f"restart under load {db}",
                f"healthy {min(healthy):.1f}-{max(healthy):.1f} s",
                f"<= {GOALS['restart_s']:g} s",
                "met" if max(healthy) <= GOALS["restart_s"] else "missed",
                f"first job {_span(first)} s, ingesting {_span(ingesting)} s, "
                f"{_f(rounds[0]['pending_at_kill'])} pending at the kill",
            )
        )
    soak = r.get("soak")
    if soak:
        rows.append(
            (
                "memory soak",
                f"{soak['rss_start_mb']:.0f} -> {soak['rss_end_mb']:.0f} MB",
                "flat",
                f"{soak['slope_mb_per_min_after_warmup']:+.2f} MB/min",
                f"{soak['minutes']:g} min at {soak['rate']}/s, {_f(soak.get('created_per_s'))} "
                f"jobs/s, most alive {soak.get('max_alive')} of max_in_flight "
                f"{soak.get('max_in_flight')}",
            )
        )
    print(f"\n{'what':32} {'ours':30} {'goal':18} {'':14} against")
    for what, value, goal, met, note in rows:
        print(f"{what:32} {value:30} {goal:18} {met:14} {note}")
    if peers:
        head = f"{'peer (same machine and database)':34} {'enqueue/s':>10} {'processed/s':>12}"
        print(f"\n{head}  start p50 / p99 (ms) by rate")
        for x in peers:
            by_rate = ", ".join(
                f"@{rate}/s {_f(v['p50_ms'], 1)} / {_f(v['p99_ms'], 1)}"
                for rate, v in (x.get("latency") or {}).items()
            )
            counts = f"{_f(x['enqueue_per_s']):>10} {_f(x['processed_per_s']):>12}"
            print(f"{x['peer']:34} {counts}  {by_rate}")
        ratios(r, peers)


def ratios(r: dict[str, Any], peers: list[dict[str, Any]]) -> None:
    """Ours divided by each peer's figure for the same thing (> 1: we are faster)."""
    eng = r.get("engine") or {}
    ing = (r.get("ingest") or {}).get("postgresql") or {}
    pg = eng.get("postgresql") or {}
    lat = {(x["db"], x["rate"]): x for x in (r.get("latency") or [])}
    print("\nratios on PostgreSQL (ours / peer; latency: peer / ours, > 1 means ours is lower)")
    for x in peers:
        parts = [
            f"ingest/enqueue {_ratio(ing.get('events_per_s'), x['enqueue_per_s'])}",
            "function jobs/processed "
            f"{_ratio(pg.get('function_jobs_per_s'), x['processed_per_s'])}",
            f"async function jobs/processed "
            f"{_ratio(pg.get('async_function_jobs_per_s'), x['processed_per_s'])}",
            f"shell jobs/processed {_ratio(pg.get('jobs_per_s'), x['processed_per_s'])}",
        ]
        for rate, v in (x.get("latency") or {}).items():
            ours = lat.get(("postgresql", int(float(rate))))
            if ours:
                parts.append(f"p50 @{rate}/s {_ratio(v['p50_ms'], ours['start_p50'])}")
        print(f"  {x['peer']:18} " + ", ".join(parts))


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
    for name in ("limits", "engine", "ingest", "restart", "latency", "burst", "receivers"):
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
