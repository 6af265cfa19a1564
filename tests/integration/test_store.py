"""The Store contract, on SQLite, on PostgreSQL and in memory (the ``store`` fixture runs
all three: ``headwater.testing.InMemoryStore`` keeps the same contract)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from headwater.errors import ConflictError, NotFoundError
from headwater.server.json_shapes import job_json
from headwater.store import (
    Channel,
    JobFilter,
    JobStatus,
    LogLine,
    LogStream,
    NewJob,
    RejectedEvent,
    StepStatus,
    StepUpdate,
    Store,
    Subscription,
)
from headwater.store.postgres import LISTEN_APPLICATION
from headwater.store.sql import SqlStore, open_store

DONE = JobStatus.COMPLETED


def job(task: str = "t", **kw: object) -> NewJob:
    kw.setdefault("workspace", "ws")
    kw.setdefault("input", {})
    kw.setdefault("source_type", "api")
    return NewJob(task=task, **kw)  # type: ignore[arg-type]


async def insert(store: SqlStore, *jobs: NewJob) -> list[str]:
    return [o.id for o in await store.insert_jobs(list(jobs))]


async def payloads_until(sub: Subscription, done: Callable[[list[str]], bool]) -> list[str]:
    """Collect payloads until ``done(seen)``; 5 s at most (a hang is a failure)."""
    seen: list[str] = []
    async with asyncio.timeout(5):
        while not done(seen):
            seen += await sub.wait(timeout=5)
    return seen


async def listening(store: Store, sub: Subscription) -> None:
    """PostgreSQL: wait for the LISTEN connection, and drop its "re-read all" hint (SQLite
    and the in-memory store publish in-process: there is nothing to wait for)."""
    if not isinstance(store, SqlStore) or store.dialect == "sqlite":
        return
    await store.wait_listening(timeout=5)
    await payloads_until(sub, lambda seen: "*" in seen)


# -- insert / get / list -------------------------------------------------------------------


async def test_insert_and_get_round_trip(store: SqlStore) -> None:
    before = datetime.now(UTC)
    [outcome] = await store.insert_jobs(
        [
            NewJob(
                workspace="ws",
                task="build",
                input={"n": 1, "nested": {"ü": [1, 2]}},
                source_type="webhook",
                source_id="hook-a",
                dedup_key="k",
                tags=frozenset({"gpu", "docker"}),
                max_attempts=5,
            )
        ]
    )
    assert outcome.created
    got = await store.get_job(outcome.id)
    assert got is not None
    assert (got.id, got.workspace, got.task, got.status) == (outcome.id, "ws", "build", "pending")
    assert got.input == {"n": 1, "nested": {"ü": [1, 2]}}
    assert got.output is None and got.error is None and got.steps == ()
    assert (got.source_type, got.source_id, got.dedup_key) == ("webhook", "hook-a", "k")
    assert got.tags == frozenset({"docker", "gpu"})
    assert (got.attempt, got.max_attempts, got.cancel_requested) == (0, 5, False)
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= got.created_at <= datetime.now(UTC)
    assert got.started_at is None and got.finished_at is None
    assert await store.get_job("no-such-job") is None
    assert job_json(got)["created_at"].endswith("Z")


async def test_ids_are_time_ordered_and_caller_ids_kept(store: SqlStore) -> None:
    ids = await insert(store, *(job() for _ in range(50)))
    assert ids == sorted(ids) and len(set(ids)) == 50
    [mine] = await insert(store, job(id="my-own-id"))
    assert mine == "my-own-id"
    again = await store.insert_jobs([job(id="my-own-id", task="other")])
    assert [(o.id, o.created) for o in again] == [("my-own-id", False)]


async def test_get_jobs_leaves_unknown_out(store: SqlStore) -> None:
    a, b = await insert(store, job(), job())
    got = await store.get_jobs([b, "missing", a, a])
    assert sorted(j.id for j in got) == sorted([a, b])
    assert await store.get_jobs([]) == []


async def test_list_filters(store: SqlStore) -> None:
    a, b, c, d = await insert(
        store,
        job("alpha", source_type="webhook", source_id="h1"),
        job("beta", source_type="scheduler", source_id="cron1", workspace="other"),
        job("alpha", source_type="event_source", source_id="h1"),
        job("gamma", parent_job_id="parent-1"),
    )
    [claimed] = await store.claim_jobs("w", ["script"], 1)
    assert claimed.id == a
    await store.finish_job(a, "w", JobStatus.FAILED, error="boom")

    async def ids(**kw: object) -> list[str]:
        return [j.id for j in await store.list_jobs(JobFilter(**kw))]  # type: ignore[arg-type]

    assert await ids() == [d, c, b, a]  # newest first
    assert await ids(task="alpha") == [c, a]
    assert await ids(status=JobStatus.FAILED) == [a]
    assert await ids(status=JobStatus.PENDING) == [d, c, b]
    assert await ids(source_type="scheduler") == [b]
    assert await ids(source_id="h1") == [c, a]
    assert await ids(workspace="other") == [b]
    assert await ids(parent_job_id="parent-1") == [d]
    assert await ids(task="alpha", source_id="h1", status=JobStatus.PENDING) == [c]
    assert await ids(limit=2) == [d, c]
    listed = await store.list_jobs(JobFilter(task="alpha"))
    assert listed[1].error == "boom" and listed[1].steps == ()


async def test_list_keyset_pagination(store: SqlStore) -> None:
    ids = await insert(store, *(job() for _ in range(23)))
    pages: list[list[str]] = []
    before: str | None = None
    while True:
        page = [j.id for j in await store.list_jobs(JobFilter(limit=10, before_id=before))]
        if not page:
            break
        pages.append(page)
        before = page[-1]
    assert [len(p) for p in pages] == [10, 10, 3]
    assert [i for p in pages for i in p] == ids[::-1]
    assert await store.list_jobs(JobFilter(before_id="unknown-cursor")) == []


# -- dedup ---------------------------------------------------------------------------------


async def test_dedup_across_batches(store: SqlStore) -> None:
    [first] = await store.insert_jobs([job(dedup_key="evt-1", input={"v": 1})])
    [second] = await store.insert_jobs([job(dedup_key="evt-1", input={"v": 2})])
    assert first.created and not second.created and second.id == first.id
    got = await store.get_job(first.id)
    assert got is not None and got.input == {"v": 1}


async def test_dedup_inside_one_batch_keeps_order(store: SqlStore) -> None:
    [old] = await insert(store, job(dedup_key="old"))
    outcomes = await store.insert_jobs(
        [
            job(dedup_key="a"),
            job(dedup_key="old"),
            job(dedup_key="a"),
            job(),
            job(dedup_key="b"),
            job(dedup_key="old"),
        ]
    )
    created = [o.created for o in outcomes]
    assert created == [True, False, False, True, True, False]
    assert outcomes[1].id == outcomes[5].id == old
    assert outcomes[2].id == outcomes[0].id
    assert len({outcomes[0].id, outcomes[3].id, outcomes[4].id, old}) == 4
    assert await store.insert_jobs([]) == []


async def test_insert_large_batch(store: SqlStore) -> None:
    with store.subscribe(Channel.JOBS) as woken:
        await listening(store, woken)
        outcomes = await store.insert_jobs([job(dedup_key=f"k{i}") for i in range(3000)])
        assert "script" in await payloads_until(woken, lambda seen: "script" in seen)
    assert all(o.created for o in outcomes)
    again = await store.insert_jobs([job(dedup_key=f"k{i}") for i in range(2990, 3010)])
    assert [o.created for o in again] == [False] * 10 + [True] * 10
    assert [o.id for o in again[:10]] == [o.id for o in outcomes[2990:]]
    # A large batch with a clash (PostgreSQL: the COPY fails as a whole; the batch is then
    # inserted row by row with ON CONFLICT) still creates exactly the new ones, and wakes.
    with store.subscribe(Channel.JOBS) as woken:  # (the LISTEN connection is up already)
        big = await store.insert_jobs([job(dedup_key=f"k{i}") for i in range(2500, 3500)])
        assert [o.created for o in big] == [False] * 510 + [True] * 490
        assert [o.id for o in big[:500]] == [o.id for o in outcomes[2500:]]
        assert "script" in await payloads_until(woken, lambda seen: "script" in seen)
    counts = await store.count_jobs_by_status()
    assert counts["pending"] == 3000 + 10 + 490


async def test_large_batches_keep_every_field_with_and_without_shared_columns(
    store: SqlStore,
) -> None:
    """An event source's batch (rows that differ only in id, input and dedup key: SQLite
    binds the rest once, PostgreSQL's COPY leaves defaults out) and a mixed one (parents,
    priorities, other tasks) store every field as given."""
    shared = [
        job("ingest", input={"n": i, "s": "é\n"}, source_type="event_source", source_id="ws/src",
            dedup_key=f"e{i}", max_attempts=5)
        for i in range(300)
    ]  # fmt: skip
    mixed = [
        job(f"t{i % 3}", input={"n": i}, parent_job_id="p" if i % 2 else None,
            priority=i % 4, tags=frozenset({"script", f"x{i % 2}"}), dedup_key=f"m{i}")
        for i in range(300)
    ]  # fmt: skip
    for batch in (shared, mixed):
        outcomes = await store.insert_jobs(batch)
        assert all(o.created for o in outcomes)
        for new, outcome in zip(batch[::37], outcomes[::37], strict=True):
            got = await store.get_job(outcome.id)
            assert got is not None
            assert (got.workspace, got.task, got.input, got.source_type, got.source_id) == (
                new.workspace, new.task, new.input, new.source_type, new.source_id,
            )  # fmt: skip
            assert (got.dedup_key, got.tags, got.parent_job_id, got.max_attempts) == (
                new.dedup_key, new.tags, new.parent_job_id, new.max_attempts,
            )  # fmt: skip
            assert (got.status, got.attempt, got.cancel_requested) == (JobStatus.PENDING, 0, False)
    # Priorities were stored: the highest is claimed first.
    [top] = await store.claim_jobs("w", ["script,x1"], 1)
    assert top.input["n"] % 4 == 3


# -- claim ---------------------------------------------------------------------------------


async def test_claim_oldest_first_with_limit(store: SqlStore) -> None:
    ids = await insert(store, *(job() for _ in range(5)))
    first = await store.claim_jobs("w1", ["script"], 2)
    assert [j.id for j in first] == ids[:2]
    for claimed in first:
        assert (claimed.status, claimed.worker_id, claimed.attempt) == ("running", "w1", 1)
        assert claimed.started_at is not None and claimed.started_at.tzinfo is not None
        assert claimed.steps == ()
    rest = await store.claim_jobs("w2", ["script"], 10)
    assert [j.id for j in rest] == ids[2:]
    assert await store.claim_jobs("w2", ["script"], 10) == []
    assert await store.claim_jobs("w2", [], 10) == []
    assert await store.claim_jobs("w2", ["script"], 0) == []


async def test_claim_matches_tag_signatures(store: SqlStore) -> None:
    plain, gpu, docker = await insert(
        store,
        job(),
        job(tags=frozenset({"gpu", "docker"})),
        job(tags=frozenset({"docker"})),
    )
    assert await store.claim_jobs("w", ["gpu", "docker,script"], 10) == []
    got = await store.claim_jobs("w", ["docker,gpu", "docker"], 10)
    assert [j.id for j in got] == [gpu, docker]  # oldest first across signatures
    assert got[0].tags == frozenset({"docker", "gpu"})
    [last] = await store.claim_jobs("w", ["script", "script"], 10)
    assert last.id == plain


async def test_claimed_job_carries_existing_steps(store: SqlStore) -> None:
    [job_id] = await insert(store, job(max_attempts=2))
    await store.claim_jobs("w1", ["script"], 1)
    t0 = datetime.now(UTC)
    await store.upsert_steps(
        job_id,
        [
            StepUpdate(
                "build", "make", StepStatus.COMPLETED, 0, {"artifact": "a.tgz"}, None, 1, t0
            ),
            StepUpdate("test", "pytest", StepStatus.RUNNING, started_at=t0 + timedelta(seconds=1)),
        ],
    )
    [recovered] = await store.recover_stale_jobs(stale_after=60)  # w1 never registered
    assert recovered.requeued
    [again] = await store.claim_jobs("w2", ["script"], 1)
    assert again.attempt == 2 and again.worker_id == "w2"
    build, test = again.steps
    assert (build.name, build.status, build.output, build.exit_code) == (
        "build",
        "completed",
        {"artifact": "a.tgz"},
        0,
    )
    assert (test.status, test.error) == ("failed", "interrupted: worker lost")


# Not on the in-memory store: one InMemoryStore is one database, so several store
# instances over one database (the point here) cannot be expressed; the claimers of one
# instance are below.
async def test_concurrent_claimers_get_disjoint_complete_sets(db_url: str) -> None:
    stores = [await open_store(db_url) for _ in range(4)]
    try:
        ids = set(await insert(stores[0], *(job() for _ in range(300))))

        async def claimer(i: int) -> list[str]:
            got: list[str] = []
            while batch := await stores[i].claim_jobs(f"w{i}", ["script"], 7):
                got += [j.id for j in batch]
            return got

        results = await asyncio.gather(*(claimer(i) for i in range(4)))
        claimed = [i for r in results for i in r]
        assert len(claimed) == len(set(claimed)) == 300
        assert set(claimed) == ids
    finally:
        for st in stores:
            await st.close()


# -- finish, steps, logs -------------------------------------------------------------------


async def test_concurrent_claimers_of_one_store_get_disjoint_complete_sets(
    store: Store,
) -> None:
    ids = set(await insert(store, *(job() for _ in range(300))))

    async def claimer(i: int) -> list[str]:
        got: list[str] = []
        while batch := await store.claim_jobs(f"w{i}", ["script"], 7):
            got += [j.id for j in batch]
        return got

    results = await asyncio.gather(*(claimer(i) for i in range(4)))
    claimed = [i for r in results for i in r]
    assert len(claimed) == len(set(claimed)) == 300
    assert set(claimed) == ids


async def test_finish_is_fenced(store: SqlStore) -> None:
    a, b, c = await insert(store, job(), job(), job())
    await store.claim_jobs("w1", ["script"], 2)
    assert not await store.finish_job(a, "w2", DONE)  # not its owner
    assert await store.finish_job(a, "w1", DONE, output={"r": [1]})
    assert not await store.finish_job(a, "w1", JobStatus.FAILED)  # already final
    assert not await store.finish_job(c, "w1", DONE)  # pending: nobody owns it
    assert await store.finish_job(c, None, JobStatus.CANCELLED, error="by operator")
    got = await store.get_job(a)
    assert got is not None
    assert (got.status, got.output, got.error) == ("completed", {"r": [1]}, None)
    assert got.finished_at is not None and got.finished_at >= got.created_at
    results = await store.finish_jobs(
        [
            (b, "w1", JobStatus.FAILED, None, "exit 1"),
            (b, "w1", DONE, None, None),  # the same job again: already final by then
            ("missing", None, DONE, None, None),
        ]
    )
    assert results == [True, False, False]
    got = await store.get_job(b)
    assert got is not None and (got.status, got.error, got.output) == ("failed", "exit 1", None)
    with pytest.raises(ValueError):
        await store.finish_job(b, None, JobStatus.RUNNING)
    assert await store.finish_jobs([]) == []


async def test_finish_writes_its_steps_only_when_it_finishes_the_job(store: SqlStore) -> None:
    a, b = await insert(store, job(), job())
    await store.claim_jobs("w1", ["script"], 2)
    t0 = datetime.now(UTC)
    done = StepUpdate("s", "act", StepStatus.COMPLETED, 0, {"x": 1}, None, 1, t0, t0)
    assert await store.finish_job(a, "w1", DONE, {"s": {"x": 1}}, steps=[done])
    got = await store.get_job(a)
    assert got is not None and got.status == "completed"
    assert [(s.name, s.status, s.output) for s in got.steps] == [("s", "completed", {"x": 1})]
    # A worker that lost the job (not its owner) writes neither the finish nor the steps.
    assert not await store.finish_job(b, "w2", DONE, steps=[done])
    got = await store.get_job(b)
    assert got is not None and got.status == "running" and got.steps == ()


async def test_concurrent_step_records_and_finishes_keep_the_newest_state(
    store: SqlStore,
) -> None:
    ids = await insert(store, *(job() for _ in range(20)))
    await store.claim_jobs("w", ["script"], 20)
    t0 = datetime.now(UTC)
    running = StepUpdate("s", "act", StepStatus.RUNNING, attempts=1, started_at=t0)
    done = StepUpdate("s", "act", StepStatus.COMPLETED, 0, None, None, 1, t0, t0)
    other = StepUpdate("t", "act", StepStatus.RUNNING, attempts=1, started_at=t0)

    async def one(job_id: str) -> bool:
        # Submitted one after the other, so they mostly share transactions: the finish
        # (the newer state of step s) wins.
        record = asyncio.ensure_future(store.upsert_steps(job_id, [running, other]))
        await asyncio.sleep(0)  # the record is queued
        finished = await store.finish_job(job_id, "w", DONE, steps=[done])
        await record
        return finished

    assert await asyncio.gather(*(one(i) for i in ids)) == [True] * 20
    for job_id in ids:
        got = await store.get_job(job_id)
        assert got is not None and got.status == "completed"
        assert {s.name: s.status for s in got.steps} == {"s": "completed", "t": "running"}


async def test_a_bad_step_record_fails_alone_in_a_shared_transaction(store: SqlStore) -> None:
    (a,) = await insert(store, job())
    await store.claim_jobs("w", ["script"], 1)
    step = StepUpdate("s", "act", StepStatus.COMPLETED, 0, None, None, 1)
    bad = asyncio.ensure_future(store.upsert_steps("missing", [step]))
    await asyncio.sleep(0)  # queued: the finish joins its transaction
    assert await store.finish_job(a, "w", DONE, steps=[step])
    with pytest.raises(NotFoundError):
        await bad
    got = await store.get_job(a)
    assert got is not None and got.status == "completed" and len(got.steps) == 1


async def test_upsert_steps(store: SqlStore) -> None:
    [job_id] = await insert(store, job())
    t0 = datetime.now(UTC)
    await store.upsert_steps(
        job_id,
        [
            StepUpdate("b", "act", StepStatus.RUNNING, started_at=t0 + timedelta(seconds=2)),
            StepUpdate("z", "act", StepStatus.PENDING),
            StepUpdate("a", "act", StepStatus.RUNNING, started_at=t0 + timedelta(seconds=2)),
            StepUpdate("first", None, StepStatus.RUNNING, started_at=t0),
        ],
    )
    t2, t3 = t0 + timedelta(seconds=2), t0 + timedelta(seconds=3)
    done = StepUpdate("b", "act", StepStatus.COMPLETED, 0, {"x": 1}, None, 2, t2, t3)
    await store.upsert_steps(job_id, [done])
    got = await store.get_job(job_id)
    assert got is not None
    assert [s.name for s in got.steps] == ["first", "a", "b", "z"]  # by start, then name
    b = got.steps[2]
    assert (b.status, b.exit_code, b.output, b.attempts) == ("completed", 0, {"x": 1}, 2)
    assert b.started_at == t2 and b.finished_at == t3
    assert got.steps[0].action is None
    with pytest.raises(NotFoundError):
        await store.upsert_steps("missing", [done])


async def test_logs_append_and_read(store: SqlStore) -> None:
    a, b = await insert(store, job(), job())
    ts = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    await store.append_logs(
        [
            LogLine(a, "build", LogStream.STDOUT, "compiling", ts),
            LogLine(b, None, LogStream.SYSTEM, "other job", ts),
            LogLine(a, "build", LogStream.STDERR, "warning: ü", ts),
            LogLine(a, "test", LogStream.STDOUT, "ok", ts + timedelta(seconds=1)),
        ]
    )
    lines = await store.get_logs(a)
    assert [x.line for x in lines] == ["compiling", "warning: ü", "ok"]
    assert lines[0].seq < lines[1].seq < lines[2].seq
    assert (lines[1].stream, lines[1].step, lines[1].job_id) == ("stderr", "build", a)
    assert lines[0].ts == ts
    assert [x.line for x in await store.get_logs(a, after_seq=lines[0].seq)] == [
        "warning: ü",
        "ok",
    ]
    assert [x.line for x in await store.get_logs(a, step="test")] == ["ok"]
    assert [x.line for x in await store.get_logs(a, limit=1)] == ["compiling"]
    await store.append_logs([LogLine(a, None, LogStream.SYSTEM, "later", ts)])
    newer = await store.get_logs(a, after_seq=lines[-1].seq)
    assert [x.line for x in newer] == ["later"] and newer[0].seq > lines[-1].seq
    await store.append_logs([])


# -- cancel, workers, recovery -------------------------------------------------------------


async def test_request_cancel(store: SqlStore) -> None:
    running, final, pending = await insert(store, job(), job(), job())
    await store.claim_jobs("w1", ["script"], 2)  # the two oldest
    assert await store.finish_job(final, "w1", DONE)

    cancelled = await store.request_cancel(pending)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None

    asked = await store.request_cancel(running)
    assert (asked.status, asked.cancel_requested, asked.finished_at) == ("running", True, None)
    await store.register_worker("w1", "worker one", frozenset({"script"}))
    assert await store.heartbeat("w1") == [running]
    assert await store.heartbeat("w2") == []

    with pytest.raises(ConflictError, match="already completed"):
        await store.request_cancel(final)
    with pytest.raises(ConflictError):
        await store.request_cancel(pending)
    with pytest.raises(NotFoundError):
        await store.request_cancel("missing")


async def test_workers_register_heartbeat_deregister(store: SqlStore) -> None:
    await store.register_worker("w1", "one", frozenset({"script", "docker"}))
    await store.register_worker("w2", "two", frozenset())
    [w1, w2] = await store.list_workers()
    assert (w1.id, w1.name, w1.tags) == ("w1", "one", frozenset({"docker", "script"}))
    assert w2.tags == frozenset()
    assert w1.last_heartbeat.tzinfo is not None
    assert await store.heartbeat("w1") == []
    [w1_again, _] = await store.list_workers()
    assert w1_again.last_heartbeat >= w1.last_heartbeat
    await store.deregister_worker("w2")
    assert [w.id for w in await store.list_workers()] == ["w1"]


async def test_recovery_requeues_fails_and_cancels(store: SqlStore) -> None:
    retry, give_up, cancel, alive = await insert(
        store, job(max_attempts=2), job(max_attempts=1), job(), job()
    )
    await store.register_worker("alive", "alive", frozenset({"script"}))
    await store.claim_jobs("lost", ["script"], 3)  # "lost" never registered
    await store.claim_jobs("alive", ["script"], 1)
    await store.request_cancel(cancel)
    await store.upsert_steps(give_up, [StepUpdate("s", "a", StepStatus.RUNNING)])

    recovered = {r.id: r for r in await store.recover_stale_jobs(stale_after=60)}
    assert set(recovered) == {retry, give_up, cancel}
    assert recovered[retry].requeued and "attempt 2 of 2" in recovered[retry].reason
    assert not recovered[give_up].requeued
    assert recovered[give_up].reason == (
        "worker lost stopped heartbeating; gave up after 1 attempts"
    )
    assert not recovered[cancel].requeued

    requeued = await store.get_job(retry)
    assert requeued is not None and (requeued.status, requeued.worker_id) == ("pending", None)
    [line] = await store.get_logs(retry)
    assert line.stream == "system" and "stopped heartbeating" in line.line
    failed = await store.get_job(give_up)
    assert failed is not None and failed.status == "failed"
    assert failed.error == recovered[give_up].reason and failed.finished_at is not None
    assert (failed.steps[0].status, failed.steps[0].error) == ("failed", "interrupted: worker lost")
    gone = await store.get_job(cancel)
    assert gone is not None and gone.status == "cancelled"
    still = await store.get_job(alive)
    assert still is not None and still.status == "running"
    assert await store.recover_stale_jobs(stale_after=60) == []
    # A silent registered worker is stale too once ``stale_after`` has passed.
    [r] = await store.recover_stale_jobs(stale_after=0)
    assert r.id == alive and r.requeued


async def test_counts(store: SqlStore) -> None:
    await insert(store, job(source_id="s1"), job(source_id="s1"), job(source_id="s1"))
    await insert(store, job(source_id="s2"))
    [first] = await store.claim_jobs("w", ["script"], 1)
    assert await store.count_in_flight("s1") == 3
    await store.finish_job(first.id, "w", DONE)
    assert await store.count_in_flight("s1") == 2
    assert await store.count_in_flight("nothing") == 0
    counts = await store.count_jobs_by_status()
    assert counts == {"pending": 3, "running": 0, "completed": 1, "failed": 0, "cancelled": 0}
    [second] = await store.claim_jobs("w", ["script"], 1)
    live = await store.count_jobs_by_status([JobStatus.PENDING, JobStatus.RUNNING])
    assert live == {"pending": 2, "running": 1}
    assert await store.count_jobs_by_status([JobStatus.COMPLETED]) == {"completed": 1}
    assert second.id != first.id


async def test_rejected_events(store: SqlStore) -> None:
    bad = RejectedEvent(None, "event_source", "src", "task", {"raw": "x"}, "invalid", "e1")
    await store.insert_rejected([bad, bad])
    await store.insert_rejected([bad])
    nokey = RejectedEvent(None, "webhook", "hook", None, "not json", "undecodable", None)
    await store.insert_rejected([nokey, nokey])
    await store.insert_rejected([])
    assert await store.count_rejected("src") == 1
    assert await store.count_rejected("hook") == 2
    [one] = await store.list_rejected("src")
    assert (one.payload, one.reason, one.dedup_key, one.target_task) == (
        {"raw": "x"},
        "invalid",
        "e1",
        "task",
    )
    assert one.id is not None and one.created_at is not None
    everything = await store.list_rejected()
    assert [e.source_id for e in everything] == ["hook", "hook", "src"]  # newest first
    assert len(await store.list_rejected(limit=1)) == 1


# -- wake-ups ------------------------------------------------------------------------------


async def test_subscriptions_wake_on_changes(store: SqlStore) -> None:
    jobs_sub = store.subscribe(Channel.JOBS)
    finished = store.subscribe(Channel.FINISHED)
    cancel = store.subscribe(Channel.CANCEL)
    logs = store.subscribe(Channel.LOGS)
    for sub in (jobs_sub, finished, cancel, logs):
        await listening(store, sub)

    a, b, c = await insert(store, job(), job(tags=frozenset({"x", "a"})), job())
    seen = await payloads_until(jobs_sub, lambda s: {"script", "a,x"} <= set(s))
    assert "*" not in seen

    await store.claim_jobs("w", ["script"], 2)
    await store.finish_job(a, "w", DONE)
    assert a in await payloads_until(finished, lambda s: a in s)

    await store.request_cancel(c)  # running: the owner is asked
    assert await payloads_until(cancel, lambda s: c in s) == [c]
    await store.request_cancel(b)  # pending: cancelled at once
    assert b in await payloads_until(finished, lambda s: b in s)

    await store.append_logs([LogLine(a, None, LogStream.STDOUT, "hi", datetime.now(UTC))] * 3)
    assert await payloads_until(logs, lambda s: a in s) == [a]  # once per job and batch

    jobs_sub.close()
    await store.insert_jobs([job()])
    assert await jobs_sub.wait(timeout=0.01) == []


async def test_finish_hint_degrades_to_star_when_long(store: SqlStore) -> None:
    finished = store.subscribe(Channel.FINISHED)
    await listening(store, finished)
    ids = await insert(store, *(job() for _ in range(300)))
    await store.claim_jobs("w", ["script"], 300)
    assert all(await store.finish_jobs([(i, "w", DONE, None, None) for i in ids]))
    assert await payloads_until(finished, lambda s: bool(s)) == ["*"]


async def test_wake_ups_cross_store_instances(pg_url: str) -> None:
    """Two processes' worth of stores on PostgreSQL. (SQLite's wake-ups are in-process by
    design: the embedded mode is one process.)"""
    store, other = await open_store(pg_url), await open_store(pg_url)
    try:
        sub = other.subscribe(Channel.JOBS)
        await listening(other, sub)
        own = store.subscribe(Channel.JOBS)
        await listening(store, own)
        await insert(store, job(tags=frozenset({"remote"})))
        assert await payloads_until(sub, lambda s: "remote" in s) == ["remote"]
        # Our own notification arrives once, through LISTEN only (no in-process double).
        assert await payloads_until(own, lambda s: "remote" in s) == ["remote"]
        assert await own.wait(timeout=0.05) == []
    finally:
        await other.close()
        await store.close()


async def test_close_ends_subscriptions(store: Store) -> None:
    sub = store.subscribe(Channel.LOGS)
    await store.close()
    await store.close()  # idempotent
    assert sub.closed and await sub.wait(timeout=1) == []


async def test_listen_connection_reconnects_and_says_reread(pg_url: str) -> None:
    import asyncpg

    store = await open_store(pg_url)
    try:
        sub = store.subscribe(Channel.JOBS)
        await listening(store, sub)
        admin = await asyncpg.connect(pg_url)
        try:  # kill the store's LISTEN backend, as a server restart or a proxy would
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = $1",
                LISTEN_APPLICATION,
            )
        finally:
            await admin.close()
        assert killed == 1
        assert await payloads_until(sub, lambda s: "*" in s) == ["*"]  # back: re-read
        await insert(store, job(tags=frozenset({"after"})))
        assert "after" in await payloads_until(sub, lambda s: "after" in s)
    finally:
        await store.close()
