"""Built-in receivers: broker messages → committed jobs, next to the broker's raw rate.

For each receiver type (the same harnesses the contract suite uses, so the same real
brokers), prints:
- raw: the broker's own consume + acknowledge rate of N messages with its client library
  and no headwater (the ceiling);
- ours: N messages already in the broker → N jobs committed (targets not run), events/s;
- CPU per message (µs): this process's CPU time (every thread) over the raw consume, and
  over ours from the first job to the last; steadier than the rates on a shared machine;
- latency: messages published at a fixed rate with their send time → job created_at,
  p50/p99 (publish → job committed).

    python bench/receivers.py [--n 5000] [--rate 200] [--seconds 5] [--only redis_stream,amqp]
                              [--db sqlite|postgresql] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.integration.receivers.conftest import SECRETS, SOURCE_ID, workspace_with  # noqa: E402
from tests.integration.receivers.harness import HARNESSES  # noqa: E402

from headwater.dispatch.dispatcher import Dispatcher  # noqa: E402
from headwater.store.base import JobFilter, Store  # noqa: E402
from headwater.store.sql import open_store  # noqa: E402
from headwater.triggers.receivers.manager import ReceiverManager  # noqa: E402
from headwater.workspace.templating import TemplateEngine  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"


class Rate(NamedTuple):
    per_s: float
    cpu_us: float  # CPU time of this process (all its threads) per message, µs


class _Clock:
    """Wall and CPU time since it was made: a rate, and what each message cost us."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def rate(self, got: float) -> Rate:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return Rate(got / wall, cpu / got * 1e6 if got else float("nan"))


RawConsumer = Callable[[Any, int], Awaitable[Rate]]


def pct(values: list[float], p: float) -> Rate:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


# -- raw consumers: the broker's own rate, no headwater -------------------------------------
async def _raw_redis_stream(h: Any, n: int) -> Rate:
    client = h.client
    group = f"raw-{uuid.uuid4().hex[:6]}"
    await client.xgroup_create(h.stream, group, id="0")
    got = 0
    started = _Clock()
    while got < n:
        reply = await client.xreadgroup(group, "raw", {h.stream: ">"}, count=500, block=1000)
        if not reply:
            break
        entries = reply[0][1]
        await client.xack(h.stream, group, *[e[0] for e in entries])
        got += len(entries)
    rate = started.rate(got)
    await client.xgroup_destroy(h.stream, group)
    return rate


async def _raw_redis_list(h: Any, n: int) -> Rate:
    got = 0
    started = _Clock()
    while got < n:
        batch = await h.client.rpop(h.list, 500)
        if not batch:
            break
        got += len(batch)
    return started.rate(got)


async def _raw_amqp(h: Any, n: int) -> Rate:
    await h.channel.set_qos(prefetch_count=500)
    queue = await h.channel.get_queue(h.queue)
    got = 0
    started = _Clock()
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            got += 1
            if got >= n:
                break
    return started.rate(got)


async def _raw_mqtt(h: Any, n: int) -> Rate:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0xFFFFFFFF
    got = 0
    started = _Clock()
    async with aiomqtt.Client(
        "127.0.0.1",
        identifier=h.client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=props,
    ) as client:
        async for _ in client.messages:
            got += 1
            if got >= n:
                break
    return started.rate(got)


async def _raw_nats(h: Any, n: int) -> Rate:
    sub = await h.js.pull_subscribe(h.subject, durable="raw", stream=h.stream)
    got = 0
    started = _Clock()
    while got < n:
        for message in await sub.fetch(batch=500, timeout=5):
            await message.ack()
            got += 1
    return started.rate(got)


async def _raw_kafka(h: Any, n: int) -> Rate:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        h.topic,
        bootstrap_servers=h.broker.advertised,
        group_id="raw",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got = 0
    started = _Clock()
    try:
        while got < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            got += sum(len(records) for records in batches.values())
            await consumer.commit()
    finally:
        await consumer.stop()
    return started.rate(got)


async def _raw_sqs(h: Any, n: int) -> Rate:
    got = 0
    started = _Clock()
    while got < n:
        reply = await h.client.receive_message(QueueUrl=h.queue_url, MaxNumberOfMessages=10)
        messages = reply.get("Messages", [])
        if not messages:
            break
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        await h.client.delete_message_batch(QueueUrl=h.queue_url, Entries=entries)
        got += len(messages)
    return started.rate(got)


async def _raw_postgres(h: Any, n: int) -> Rate:
    got, last = 0, 0
    started = _Clock()
    while got < n:
        cur = await h.conn.execute(
            f"SELECT id, body FROM {h.table} WHERE id > %s ORDER BY id LIMIT 500", [last]
        )
        rows = await cur.fetchall()
        if not rows:
            break
        last = rows[-1][0]
        got += len(rows)
    return started.rate(got)


async def _raw_postgres_cdc(h: Any, n: int) -> Rate:
    """The slot read and consumed by PostgreSQL's own SQL function (no decoding on our
    side): the server's decoding rate, the ceiling of any SQL-function reader."""
    got = 0
    started = _Clock()
    while got < n:
        cur = await h.conn.execute(
            "SELECT count(*) FILTER (WHERE get_byte(data, 0) = 73), count(*)"
            " FROM pg_logical_slot_get_binary_changes(%s, NULL, 2000,"
            " 'proto_version', '1', 'publication_names', %s)",
            [h.slot, h.slot],
        )
        inserts, rows = await cur.fetchone()
        if not rows:
            break
        got += inserts
    return started.rate(got)


async def _raw_mysql_cdc(h: Any, n: int) -> Rate:
    """The binlog read by mysql-replication alone: the rows of the harness's table from
    where it began, decoded, with no checkpoint and no job."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    file, _, pos = h.start.rpartition(":")

    def read() -> int:
        stream = BinLogStreamReader(
            connection_settings={"host": "127.0.0.1", "port": 3306, "user": "root", "passwd": ""},
            server_id=h.server_id,
            blocking=False,
            resume_stream=True,
            log_file=file,
            log_pos=int(pos),
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
            only_schemas=[h.database],
            enable_logging=False,
        )
        got = 0
        try:
            for event in stream:
                got += len(event.rows)
                if got >= n:
                    break
        finally:
            stream.close()
        return got

    started = _Clock()
    got = await asyncio.to_thread(read)
    return started.rate(got)


RAW: dict[str, RawConsumer] = {
    "redis_stream": _raw_redis_stream,
    "redis_list": _raw_redis_list,
    "amqp": _raw_amqp,
    "mqtt": _raw_mqtt,
    "nats": _raw_nats,
    "kafka": _raw_kafka,
    "sqs": _raw_sqs,
    "postgres": _raw_postgres,
    "postgres_cdc": _raw_postgres_cdc,
    "mysql_cdc": _raw_mysql_cdc,
}


async def raw_rate(kind: str, n: int) -> Rate | None:
    """The broker's own rate, on a harness (queue, topic…) of its own."""
    raw = RAW.get(kind)
    if raw is None:
        return None
    harness = HARNESSES[kind]()
    await harness.setup()
    try:
        for start in range(0, n, 500):
            await _publish(harness, [{"n": i} for i in range(start, min(n, start + 500))])
        return await raw(harness, n)
    finally:
        await harness.cleanup()


def _publish(harness: Any, payloads: list[Any]) -> Awaitable[Any]:
    """A harness's bulk publish when it has one (postgres_cdc: one transaction, without
    looking up each change's id), else its publish."""
    return getattr(harness, "publish_many", harness.publish)(payloads)


# -- headwater ---------------------------------------------------------------------------
async def _fresh_store(kind: str, tmp: Path) -> tuple[Store, Callable[[], Awaitable[None]]]:
    if kind == "sqlite":
        store = await open_store(f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:6]}.db")
        return store, store.close
    from tests.conftest import create_pg_database, drop_pg_database

    url = await create_pg_database()
    store = await open_store(url)

    async def cleanup() -> None:
        await store.close()
        await drop_pg_database(url)

    return store, cleanup


async def _run_manager(store: Store, trigger: dict[str, Any], secrets: dict[str, str]) -> Any:
    ws = workspace_with(trigger)
    manager = ReceiverManager(
        store, Dispatcher(store, lambda: ws), lambda: ws, TemplateEngine(), lambda: secrets
    )
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    return stop, task


async def _wait_count(store: Store, n: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        count = await store.count_source(SOURCE_ID)
        if count >= n or time.perf_counter() > deadline:
            return count
        await asyncio.sleep(0.02)


async def bench_type(kind: str, db: str, n: int, rate: float, seconds: float) -> dict[str, Any]:
    if kind == "mqtt":
        n = min(n, 1000)  # Mosquitto queues at most 1,000 messages for an absent session
    if kind == "sqs":
        # moto answers a few hundred requests a second at best: it is a functional
        # stand-in for SQS, not a performance one, so its figures only show our overhead.
        n, rate, seconds = min(n, 300), min(rate, 20.0), min(seconds, 3.0)
    result: dict[str, Any] = {"receiver": kind, "n": n}
    # First, on a queue of its own (and before ours exists: Kafka's proxy port is single).
    raw = await raw_rate(kind, n)
    result["raw_per_s"] = raw.per_s if raw else None
    result["raw_cpu_us"] = raw.cpu_us if raw else None
    harness = HARNESSES[kind]()
    await harness.setup()
    secrets = {**SECRETS, **getattr(harness, "secrets", dict)()}
    # No backpressure and big batches: this measures the pipeline, not max_in_flight.
    trigger = harness.trigger()
    trigger["batch_size"] = 10 if kind == "sqs" else 500  # SQS returns at most 10
    trigger.pop("max_in_flight", None)
    try:
        for start in range(0, n, 500):
            await _publish(harness, [{"n": i} for i in range(start, min(n, start + 500))])
        with tempfile.TemporaryDirectory() as tmp:
            store, cleanup = await _fresh_store(db, Path(tmp))
            try:
                stop, task = await _run_manager(store, trigger, secrets)
                # Timed from the first job: connecting (a Kafka group join takes
                # seconds) is start-up, not throughput.
                first = await _wait_count(store, 1, timeout=60)
                clock = _Clock()
                got = await _wait_count(store, n, timeout=max(60.0, n / 200))
                ours = clock.rate(got - first)
                result["events_per_s"] = ours.per_s
                result["cpu_us"] = ours.cpu_us
                result["jobs"] = got
                # Latency: paced publishes carrying their send time.
                sent: list[float] = []
                interval = 1 / rate
                t0 = time.perf_counter()
                for i in range(int(rate * seconds)):
                    await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
                    stamp = time.time()
                    sent.append(stamp)
                    await _publish(harness, [{"n": n + i, "sent": stamp}])
                await _wait_count(store, n + len(sent), timeout=30)
                jobs = await store.list_jobs(JobFilter(source_id=SOURCE_ID, limit=n + len(sent)))
                lat = [
                    (j.created_at.timestamp() - j.input["payload"]["sent"]) * 1000
                    for j in jobs
                    if isinstance(j.input.get("payload"), dict) and "sent" in j.input["payload"]
                ]
                result["p50_ms"] = pct(lat, 50)
                result["p99_ms"] = pct(lat, 99)
                stop.set()
                await task
            finally:
                await cleanup()
    finally:
        await harness.cleanup()
    return result


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "n/a"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--only", default="", help="comma-separated receiver types")
    ap.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    kinds = [k for k in sorted(HARNESSES) if not args.only or k in args.only.split(",")]
    rows = []
    for kind in kinds:
        try:
            rows.append(await bench_type(kind, args.db, args.n, args.rate, args.seconds))
        except BaseException as exc:  # a broker that is not here: say so, go on
            if isinstance(exc, KeyboardInterrupt):
                raise
            rows.append({"receiver": kind, "error": f"{type(exc).__name__}: {exc}"[:120]})
    print(f"\nreceivers on {args.db}, n={args.n}, latency at {args.rate:g}/s for {args.seconds:g}s")
    print(
        f"{'receiver':14} {'raw/s':>9} {'ours/s':>9} {'% raw':>6} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'raw µs':>7} {'ours µs':>8}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['receiver']:14} {r['error']}")
            continue
        ratio = r["events_per_s"] / r["raw_per_s"] * 100 if r.get("raw_per_s") else None
        print(
            f"{r['receiver']:14} {_fmt(r.get('raw_per_s'), ',.0f'):>9}"
            f" {_fmt(r['events_per_s'], ',.0f'):>9} {_fmt(ratio, '.0f'):>5}%"
            f" {_fmt(r['p50_ms'], '.2f'):>8} {_fmt(r['p99_ms'], '.2f'):>8}"
            f" {_fmt(r.get('raw_cpu_us'), '.1f'):>7} {_fmt(r.get('cpu_us'), '.1f'):>8}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
