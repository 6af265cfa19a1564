"""The crash-injection run shared by the test (CI-sized) and bench/sdk_crash.py (big).

It starts ``headwater publisher run`` and ``headwater consumer run`` as a user would,
produces N events through ``send_event`` while they run, and meanwhile SIGKILLs
consumer workers, the supervisor and the publisher at random moments and restarts a
private Redis (no persistence: it comes back empty) once. Then it counts, per
guarantee, how often each event was applied.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import headwater
from tests.e2e.procs import HEADWATER
from tests.redis_server import RedisServer

APP = str(Path(__file__).with_name("sdk_crash_app.py"))
CONSUMERS = ("exactly", "at_least", "at_most")
EFFECTS_DDL = "CREATE TABLE effects (consumer TEXT NOT NULL, event_uuid TEXT NOT NULL)"
NO_KILLS = bool(os.environ.get("CHAOS_NO_KILLS"))


@dataclass
class ChaosReport:
    events: int
    seconds: float = 0.0
    kills: Counter[str] = field(default_factory=Counter)
    applied: dict[str, Counter[str]] = field(default_factory=dict)  # consumer → uuid → n
    sent: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"events": self.events, "seconds": round(self.seconds, 1)}
        out["kills"] = dict(self.kills)
        for name, counts in self.applied.items():
            missing = sum(1 for u in self.sent if counts[u] == 0)
            extra = sum(n - 1 for n in counts.values() if n > 1)
            out[name] = {"applied": len(counts), "missing": missing, "duplicates": extra}
        return out


class _Proc:
    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.args, self.log, self.env = args, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def children(self) -> list[int]:
        if self.proc is None:
            return []
        try:
            text_ = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text_.split()]

    def terminate(self, timeout: float = 30) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def _count(engine: Any, sql: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {str(k): int(v) for k, v in conn.execute(text(sql)).all()}


def run_chaos(
    db_url: str,
    workdir: Path,
    events: int,
    *,
    seed: int = 7,
    timeout: float = 150.0,
    self_kill: float = 0.0003,
    kill_every: tuple[float, float] = (1.0, 2.5),
    produce_secs: float = 4.0,
    max_kills: int | None = None,
) -> ChaosReport:
    rng = random.Random(seed)
    report = ChaosReport(events)
    stream = f"stream:crash:{seed}:{os.getpid()}"
    sync = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with RedisServer(workdir) as redis:
        env = {
            **os.environ,
            "CRASH_DB": db_url,
            "CRASH_STREAM": stream,
            "CRASH_SELF_KILL": str(self_kill),
            "HEADWATER_LOG_LEVEL": "warning",
        }
        common = ["--db", db_url, "--redis", redis.url, "--log-level", "warning"]
        leases = ["--lease-duration", "2", "--lease-renewal", "0.7"]
        publisher = _Proc([HEADWATER, "publisher", "run", *common, *leases],
                          workdir / "publisher.log", env)  # fmt: skip
        supervisor = _Proc(
            [HEADWATER, "consumer", "run", APP, *common, *leases, "--max-crashes", "100000",
             "--poll-interval", "0.5", "--heartbeat-dir", str(workdir / "beats"),
             "--graceful-shutdown-timeout", "10"],
            workdir / "supervisor.log", env,
        )  # fmt: skip
        subprocess.run([HEADWATER, "send-event", "--db", db_url, "--stream", "warmup",
                        "--event-type", "Migrate", "--payload", "{}"],
                       check=True, capture_output=True, env=env)  # fmt: skip
        with sync.begin() as conn:
            conn.execute(text(EFFECTS_DDL))

        def produce() -> None:
            batches = 20
            per = events // batches
            for b in range(batches):
                n = per if b < batches - 1 else events - per * (batches - 1)
                with Session(sync) as session, session.begin():
                    report.sent.extend(
                        headwater.send_event(session, stream, "Credit", {"b": b, "i": i})
                        for i in range(n)
                    )
                time.sleep(produce_secs / batches)

        t0 = time.monotonic()
        publisher.start()
        supervisor.start()
        producer = threading.Thread(target=produce)
        producer.start()
        redis_restarted = False
        next_kill = time.monotonic() + rng.uniform(*kill_every)
        try:
            while True:
                done = _count(
                    sync,
                    "SELECT consumer_name, events_processed FROM consumer_checkpoints",
                )
                if producer.is_alive() is False and all(
                    done.get(f"crash.{c}", 0) >= events for c in CONSUMERS
                ):
                    break
                if time.monotonic() - t0 > timeout:
                    raise AssertionError(f"not done after {timeout}s: {done}")
                # Progress is looked at every quarter second, so that the Redis restart
                # lands mid-run even when the consumers catch up fast; kills keep their
                # own pace.
                time.sleep(0.25)
                progress = min(done.get(f"crash.{c}", 0) for c in CONSUMERS) / events
                if not redis_restarted and progress > 0.4:
                    redis.restart(down_for=0.5)
                    redis_restarted = True
                    report.kills["redis"] += 1
                    continue
                if time.monotonic() < next_kill:
                    continue
                next_kill = time.monotonic() + rng.uniform(*kill_every)
                killed = sum(n for what, n in report.kills.items() if what != "redis")
                if progress > 0.9 or NO_KILLS or (max_kills is not None and killed >= max_kills):
                    continue  # let it finish; the kills so far are the test
                roll = rng.random()
                if roll < 0.75:
                    workers = supervisor.children()
                    if workers:
                        os.kill(rng.choice(workers), signal.SIGKILL)
                        report.kills["worker"] += 1
                elif roll < 0.875:
                    supervisor.kill()
                    report.kills["supervisor"] += 1
                    supervisor.start()
                else:
                    publisher.kill()
                    report.kills["publisher"] += 1
                    publisher.start()
        finally:
            producer.join()
            supervisor.terminate()
            publisher.terminate()
        report.seconds = time.monotonic() - t0
        assert redis_restarted, "the run ended before Redis was restarted"
        with sync.connect() as conn:
            rows = conn.execute(text("SELECT consumer, event_uuid FROM effects")).all()
        for name in CONSUMERS:
            report.applied[name] = Counter()
        for consumer, event_uuid in rows:
            report.applied[consumer][event_uuid] += 1
        report.kills["self"] = (
            sum(log.count("code=-9") for log in [(workdir / "supervisor.log").read_text()])
            - report.kills["worker"]
        )
    sync.dispose()
    return report
