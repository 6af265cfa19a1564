"""The dispatcher's promises on a real store (SQLite and PostgreSQL): every event gets
one outcome, in its order; a job is what the event and its trigger's defaults say; the
rejected ones are stored with their reason; the cursor is stored once every event up to
it is a job or a rejected event; a store failure reaches every caller of the batch."""

from __future__ import annotations

import asyncio
import math
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from headwater.dispatch.dispatcher import (
    BatchingDispatcher,
    Dispatcher,
    DispatchStatus,
    Event,
)
from headwater.errors import JsonValueError, NotFoundError
from headwater.store.base import JobFilter, NewJob, Store
from headwater.workspace.loader import load_workspace
from headwater.workspace.models import Workspace

WS = """
actions:
  noop:
    type: script
    script: "true"
  gpu:
    type: script
    script: "true"
    tags: [gpu]
tasks:
  t:
    input:
      n: { type: integer, required: true }
      kind: { type: string, default: plain }
      x: { type: any }
    flow:
      s: { action: noop }
  tagged:
    flow:
      a: { action: gpu }
  multi:
    flow:
      a: { action: gpu }
      b: { type: script, script: "true", tags: [fast] }
      c: { action: noop }
"""


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / "ws.yaml").write_text(textwrap.dedent(WS))
    return load_workspace(tmp_path / "ws.yaml")


async def jobs_by_n(store: Store) -> dict[int, Any]:
    return {j.input["n"]: j for j in await store.list_jobs(JobFilter(limit=100))}


async def test_each_event_gets_its_outcome_in_order_and_a_dedup_key_makes_one_job(
    store: Store, ws: Workspace
) -> None:
    seen: Counter[tuple[str, str | None, str]] = Counter()
    dispatcher = Dispatcher(
        store, lambda: ws, observe=lambda t, s, o, n: seen.update({(t, s, o): n})
    )
    events = [
        Event("t", {"n": 1}, "api", "src", dedup_key="k1"),
        Event("t", {"n": "one"}, "api", "src", dedup_key="bad"),
        Event("nope", {"n": 3}, "api", "src"),
        Event("t", {"n": 4}, "api", "src", dedup_key="k4"),
    ]
    first = await dispatcher.dispatch(events)
    assert [o.status for o in first] == [
        DispatchStatus.ACCEPTED,
        DispatchStatus.REJECTED,
        DispatchStatus.REJECTED,
        DispatchStatus.ACCEPTED,
    ]
    assert first[0].job_id and first[3].job_id and first[0].job_id != first[3].job_id
    assert first[1].job_id is None
    assert (first[1].reason or "").startswith("input for task 't' is invalid")
    assert "nope" in (first[2].reason or "")
    stored = await jobs_by_n(store)
    assert stored[1].id == first[0].job_id and stored[4].id == first[3].job_id
    assert stored[1].dedup_key == "k1" and stored[1].source_type == "api"
    assert stored[1].source_id == "src"

    again = await dispatcher.dispatch([events[3], Event("t", {"n": 5}, "api", "src")])
    assert again[0].status is DispatchStatus.DUPLICATE and again[0].job_id == first[3].job_id
    assert again[1].status is DispatchStatus.ACCEPTED
    assert len(await store.list_jobs(JobFilter(limit=100))) == 3

    rejected = await store.list_rejected(source_id="src")
    assert sorted((r.target_task, r.dedup_key) for r in rejected) == [
        ("nope", None),
        ("t", "bad"),
    ]
    assert {r.reason for r in rejected} == {first[1].reason, first[2].reason}
    # Kept as sent, so that a fixed workspace can replay them.
    assert sorted(str(r.payload) for r in rejected) == ["{'n': 'one'}", "{'n': 3}"]
    assert seen == {
        ("api", "src", "accepted"): 3,
        ("api", "src", "rejected"): 2,
        ("api", "src", "duplicate"): 1,
    }


async def test_a_job_is_the_event_over_its_triggers_defaults(store: Store, ws: Workspace) -> None:
    dispatcher = Dispatcher(store, lambda: ws, max_attempts=7)
    payload = {"n": 1}
    outcomes = await dispatcher.dispatch(
        [
            Event("t", payload, "cron", defaults={"n": 9, "kind": "fancy"}),
            Event("t", {"n": 2}, "cron", max_attempts=2, parent_job_id=None),
            Event("tagged", {}, "cron", tags=frozenset({"here"})),
            Event("tagged", {}, "cron"),
        ]
    )
    assert all(o.status is DispatchStatus.ACCEPTED for o in outcomes)
    assert payload == {"n": 1}  # the caller's payload is never changed
    jobs = {o.job_id: await store.get_job(o.job_id or "") for o in outcomes}
    merged, own, tagged, needs = (jobs[o.job_id] for o in outcomes)
    assert merged and merged.input == {"n": 1, "kind": "fancy"}
    assert merged.max_attempts == 7
    assert own and own.input == {"n": 2, "kind": "plain"} and own.max_attempts == 2
    assert tagged and tagged.tags == {"here"}
    assert needs and needs.tags == {"gpu", "script"}  # what its steps need


async def test_the_keyed_path_stores_what_the_general_path_stores(
    store: Store, ws: Workspace
) -> None:
    dispatcher = Dispatcher(store, lambda: ws, max_attempts=4)
    batch = dispatcher.prepare_keyed(
        "t",
        "event_source",
        "orders",
        {"kind": "fancy"},
        [("a", {"n": 1}), ("b", {"n": "x"}), ("c", {"n": 3}), ("d", {"n": 4})],
        rejected={2: "refused by the source"},
    )
    outcomes = await dispatcher.commit(batch, ("orders", "c9"))
    assert [o.status for o in outcomes] == [
        DispatchStatus.ACCEPTED,
        DispatchStatus.REJECTED,
        DispatchStatus.REJECTED,
        DispatchStatus.ACCEPTED,
    ]
    assert outcomes[2].reason and "refused by the source" in outcomes[2].reason
    stored = await jobs_by_n(store)
    assert set(stored) == {1, 4}
    assert stored[1].input == {"n": 1, "kind": "fancy"} and stored[1].dedup_key == "a"
    assert stored[1].max_attempts == 4 and stored[1].source_id == "orders"
    assert stored[1].source_type == "event_source"
    assert stored[1].tags == {"script"}  # what its steps need, as on the general path
    rejected = await store.list_rejected(source_id="orders")
    assert sorted(r.dedup_key for r in rejected) == ["b", "c"]
    cursor = await store.get_cursor("orders")
    assert cursor is not None and cursor.cursor == "c9"

    gpu = dispatcher.prepare_keyed("tagged", "event_source", "orders", {}, [("g", {})])
    (made,) = await dispatcher.commit(gpu)
    gpu_job = await store.get_job(made.job_id or "")
    assert gpu_job is not None and gpu_job.tags == {"gpu", "script"}

    unknown = dispatcher.prepare_keyed("gone", "event_source", "orders", {}, [("e", {})])
    (outcome,) = await dispatcher.commit(unknown)
    assert outcome.status is DispatchStatus.REJECTED and "gone" in (outcome.reason or "")


async def test_the_cursor_is_stored_when_every_event_was_rejected(
    store: Store, ws: Workspace
) -> None:
    dispatcher = Dispatcher(store, lambda: ws)
    (outcome,) = await dispatcher.dispatch([Event("t", {}, "event_source", "s")], ("s", "7"))
    assert outcome.status is DispatchStatus.REJECTED
    cursor = await store.get_cursor("s")
    assert cursor is not None and cursor.cursor == "7"
    assert len(await store.list_rejected(source_id="s")) == 1


async def test_bad_rows_are_rejected_alone_and_the_cursor_still_moves(
    store: Store, ws: Workspace
) -> None:
    dispatcher = Dispatcher(store, lambda: ws)
    events = [Event("t", {"n": i}, "event_source", "s", dedup_key=f"k{i}") for i in range(6)]
    for slot in (0, 3, 5):
        events[slot] = Event(
            "t", {"n": slot, "x": math.nan}, "event_source", "s", dedup_key=f"k{slot}"
        )
    outcomes = await dispatcher.dispatch(events, ("s", "after-6"))
    statuses = [o.status for o in outcomes]
    assert [i for i, s in enumerate(statuses) if s is DispatchStatus.REJECTED] == [0, 3, 5]
    stored = await jobs_by_n(store)
    assert sorted(stored) == [1, 2, 4]
    for n in (1, 2, 4):
        assert stored[n].id == outcomes[n].job_id  # each outcome names its own job
    rejected = await store.list_rejected(source_id="s")
    assert sorted(r.dedup_key for r in rejected) == ["k0", "k3", "k5"]
    assert all(r.reason.startswith("the store cannot keep this event") for r in rejected)
    assert all(r.target_task == "t" and r.source_type == "event_source" for r in rejected)
    cursor = await store.get_cursor("s")
    assert cursor is not None and cursor.cursor == "after-6"


class FailingStore:
    """A store whose job inserts fail for a reason that is not the data."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.inserts = 0

    async def insert_jobs(self, jobs: list[NewJob], cursor: Any = None) -> Any:
        self.inserts += 1
        raise ConnectionError("database unreachable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_store_failure_is_raised_and_nothing_is_half_stored(
    store: Store, ws: Workspace
) -> None:
    failing = FailingStore(store)
    dispatcher = Dispatcher(failing, lambda: ws)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await dispatcher.dispatch(
            [Event("t", {"n": 1}, "api"), Event("t", {"n": 2}, "api")], ("s", "1")
        )
    assert failing.inserts == 1  # not split as if a row were bad
    assert await store.get_cursor("s") is None


async def test_batched_callers_each_get_their_own_outcome(store: Store, ws: Workspace) -> None:
    batching = BatchingDispatcher(Dispatcher(store, lambda: ws), max_batch=3)
    try:
        outcomes = await asyncio.gather(
            *(batching.dispatch_one(Event("t", {"n": i}, "webhook")) for i in range(7)),
            batching.dispatch_one(Event("t", {"n": "bad"}, "webhook")),
        )
        stored = await jobs_by_n(store)
        assert sorted(stored) == list(range(7))
        assert [o.job_id for o in outcomes[:7]] == [stored[i].id for i in range(7)]
        assert outcomes[7].status is DispatchStatus.REJECTED
        many = await batching.dispatch_many([Event("t", {"n": 8}, "webhook")])
        assert many[0].status is DispatchStatus.ACCEPTED
    finally:
        await batching.close()


async def test_concurrent_submits_each_get_their_job_and_one_key_makes_one_job(
    store: Store, ws: Workspace
) -> None:
    """Submits at the same moment share one insert; each caller still gets its own job,
    two with the same dedup key (a workflow started twice at once) get the same one."""
    dispatcher = Dispatcher(store, lambda: ws)
    outcomes = await asyncio.gather(
        *(dispatcher.submit(Event("t", {"n": i}, "api")) for i in range(5)),
        dispatcher.submit(Event("t", {"n": 5}, "workflow", dedup_key="wf-1")),
        dispatcher.submit(Event("t", {"n": 6}, "workflow", dedup_key="wf-1")),
    )
    stored = await jobs_by_n(store)
    assert sorted(stored) == [0, 1, 2, 3, 4, 5]  # n=6 started the run n=5 started
    assert [o.id for o in outcomes[:6]] == [stored[i].id for i in range(6)]
    assert all(o.created for o in outcomes[:6])
    assert outcomes[6].id == stored[5].id and not outcomes[6].created
    with pytest.raises(NotFoundError):
        await dispatcher.submit(Event("nope", {}, "api"))


async def test_every_batched_caller_learns_of_a_store_failure(store: Store, ws: Workspace) -> None:
    batching = BatchingDispatcher(Dispatcher(FailingStore(store), lambda: ws))  # type: ignore[arg-type]
    try:
        results = await asyncio.gather(
            *(batching.dispatch_one(Event("t", {"n": i}, "webhook")) for i in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, ConnectionError) for r in results)
        # The loop lives on after a failed batch: the next caller is answered too.
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(batching.dispatch_one(Event("t", {"n": 9}, "webhook")), 10)
    finally:
        await batching.close()


class SpanRecorder:
    """Stands in for ``Tracing``: the dispatch spans asked for."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, str | None]] = []
        self.starts: list[int] = []

    def dispatch(
        self, job_id: str, task: str, source_type: str, source_id: str | None, start_ns: int
    ) -> None:
        self.spans.append((job_id, task, source_type, source_id))
        self.starts.append(start_ns)


async def test_only_a_new_job_gets_a_dispatch_span(store: Store, ws: Workspace) -> None:
    spans = SpanRecorder()
    dispatcher = Dispatcher(store, lambda: ws, tracing=spans)  # type: ignore[arg-type]
    before = time.time_ns()
    first = await dispatcher.dispatch(
        [Event("t", {"n": 1}, "api", "src", dedup_key="k"), Event("t", {}, "api", "src")]
    )
    again = await dispatcher.dispatch([Event("t", {"n": 1}, "api", "src", dedup_key="k")])
    assert again[0].status is DispatchStatus.DUPLICATE
    assert spans.spans == [(first[0].job_id, "t", "api", "src")]
    assert before <= spans.starts[0] <= time.time_ns()


class PickyStore:
    """A store that refuses, for their data, jobs whose input has ``x == "bad"`` (as a
    database refuses a value it cannot keep), with a two-line error."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def insert_jobs(self, jobs: list[NewJob], cursor: Any = None) -> Any:
        if any(job.input.get("x") == "bad" for job in jobs):
            raise JsonValueError("the value of x cannot be stored\nat row 1")
        return await self._store.insert_jobs(jobs, cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("size", [1, 3])
async def test_a_refused_event_is_kept_with_the_stores_reason_and_its_payload(
    store: Store, ws: Workspace, size: int
) -> None:
    dispatcher = Dispatcher(PickyStore(store), lambda: ws)  # type: ignore[arg-type]
    events = [Event("t", {"n": i}, "api", "src", dedup_key=f"k{i}") for i in range(size)]
    events[-1] = Event("t", {"n": 9, "x": "bad"}, "api", "src", dedup_key="k9")
    outcomes = await dispatcher.dispatch(events)
    reason = "the store cannot keep this event: the value of x cannot be stored"
    assert outcomes[-1].status is DispatchStatus.REJECTED and outcomes[-1].reason == reason
    assert [o.status for o in outcomes[:-1]] == [DispatchStatus.ACCEPTED] * (size - 1)
    (rejected,) = await store.list_rejected(source_id="src")
    assert rejected.reason == reason and rejected.dedup_key == "k9"
    assert rejected.payload == {"n": 9, "x": "bad"}  # as sent: it can be replayed


async def test_a_refused_event_of_an_event_source_keeps_its_payload(
    store: Store, ws: Workspace
) -> None:
    dispatcher = Dispatcher(PickyStore(store), lambda: ws)  # type: ignore[arg-type]
    batch = dispatcher.prepare_keyed(
        "t", "event_source", "src", {"kind": "k"}, [("a", {"n": 1}), ("b", {"n": 2, "x": "bad"})]
    )
    outcomes = await dispatcher.commit(batch)
    assert [o.status for o in outcomes] == [DispatchStatus.ACCEPTED, DispatchStatus.REJECTED]
    (rejected,) = await store.list_rejected(source_id="src")
    assert rejected.dedup_key == "b" and rejected.payload == {"n": 2, "x": "bad"}


async def test_a_batch_never_holds_more_than_max_batch_events(store: Store, ws: Workspace) -> None:
    sizes: list[int] = []

    class Counting(Dispatcher):
        async def dispatch(self, events: Any, cursor: Any = None) -> Any:
            sizes.append(len(events))
            return await super().dispatch(events, cursor)

    batching = BatchingDispatcher(Counting(store, lambda: ws), max_batch=3)
    try:
        outcomes = await asyncio.gather(
            *(batching.dispatch_one(Event("t", {"n": i}, "webhook")) for i in range(8))
        )
        assert all(o.status is DispatchStatus.ACCEPTED for o in outcomes)
        assert sum(sizes) == 8 and max(sizes) == 3
    finally:
        await batching.close()


async def test_a_jobs_tags_are_what_all_its_steps_need_and_it_keeps_its_parent(
    store: Store, ws: Workspace
) -> None:
    dispatcher = Dispatcher(store, lambda: ws)
    (parent,) = await dispatcher.dispatch([Event("t", {"n": 1}, "api")])
    (child,) = await dispatcher.dispatch([Event("multi", {}, "api", parent_job_id=parent.job_id)])
    job = await store.get_job(child.job_id or "")
    assert job is not None
    assert job.tags == {"gpu", "fast", "script"}  # named and inline steps alike
    assert job.parent_job_id == parent.job_id
    parent_job = await store.get_job(parent.job_id or "")
    assert parent_job is not None and parent_job.max_attempts == 3  # the default


async def test_a_reloaded_workspace_is_what_events_are_checked_against(
    store: Store, ws: Workspace, tmp_path: Path
) -> None:
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(
        textwrap.dedent(WS).replace("x: { type: any }", "x: { type: any, required: true }")
    )
    current = [ws]
    dispatcher = Dispatcher(store, lambda: current[0])
    assert dispatcher.prepare(Event("t", {"n": 1}, "api")).input == {"n": 1, "kind": "plain"}
    current[0] = load_workspace(stricter)  # what a reload does
    (outcome,) = await dispatcher.dispatch([Event("t", {"n": 1}, "api")])
    assert outcome.status is DispatchStatus.REJECTED and "x" in (outcome.reason or "")
    with pytest.raises(NotFoundError):
        dispatcher.prepare(Event("gone", {}, "api"))
