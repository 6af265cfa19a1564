"""A receiver that reads its next batch while the one before it commits (``overlap``):
each batch is one commit, acknowledged only after that commit and in order, and a
failure between the two (a commit that fails, a crash before the acknowledgement) loses
no message and makes no second job once the broker delivers the batch again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from headwater.dispatch.dispatcher import Dispatcher, DispatchOutcome, PreparedBatch
from headwater.store.base import JobFilter, Store
from headwater.triggers.receivers.base import ReceiverContext
from headwater.triggers.receivers.common import BrokerMessage
from headwater.workspace.loader import load_workspace
from headwater.workspace.models import Workspace
from tests.integration.test_batch_receiver import WS, FakeBroker, trigger
from tests.polling import eventually

pytestmark = pytest.mark.parametrize("store_backend", ["sqlite"])


class OverlapBroker(FakeBroker):
    overlap = True


class GatedDispatcher(Dispatcher):
    """Each commit waits for ``gate``; ``fail`` makes the next one raise it instead."""

    def __init__(self, store: Store, ws: Workspace) -> None:
        super().__init__(store, lambda: ws)
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None
        self.commits: list[list[str | None]] = []  # the dedup keys of each commit

    async def commit(
        self, batch: PreparedBatch, cursor: tuple[str, str] | None = None
    ) -> list[DispatchOutcome]:
        await self.gate.wait()
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        outcomes = await super().commit(batch, cursor)
        self.commits.append([j.dedup_key for j in batch.jobs])
        return outcomes


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / "ws.yaml").write_text(WS)
    return load_workspace(tmp_path / "ws.yaml")


@pytest.fixture
async def running() -> AsyncIterator[list[FakeBroker]]:
    started: list[FakeBroker] = []
    yield started
    for receiver in started:
        await receiver.stop()


async def start(
    running: list[FakeBroker], store: Store, dispatcher: Dispatcher, batch_size: int = 3
) -> OverlapBroker:
    receiver = OverlapBroker(trigger(batch_size=batch_size), store)
    await receiver.start(
        ReceiverContext(
            store=store,
            dispatcher=dispatcher,
            workspace="ws",
            trigger="incoming",
            trigger_type="fake",
            target_task="handle",
            defaults={},
            max_in_flight=None,
        )
    )
    running.append(receiver)
    return receiver


def messages(n: int) -> list[BrokerMessage]:
    return [BrokerMessage(f"m{i}", b'{"n": %d}' % i) for i in range(n)]


def key(i: int) -> str:
    return f"fake:ws/incoming:m{i}"


async def job_keys(store: Store) -> list[str | None]:
    return sorted(j.dedup_key for j in await store.list_jobs(JobFilter(limit=100)))


async def test_the_next_batch_is_read_while_one_commits_and_acks_follow_their_commits(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    dispatcher = GatedDispatcher(store, ws)
    dispatcher.gate.clear()  # the first commit hangs
    receiver = await start(running, store, dispatcher)
    receiver.queue = messages(7)
    # The second batch was read (and prepared) while the first one's commit hangs.
    await eventually(lambda: len(receiver.queue) == 1, what="the second batch read")
    assert receiver.acked == [] and await job_keys(store) == []
    dispatcher.gate.set()
    await eventually(lambda: len(receiver.acked) == 7, what="every message acknowledged")
    assert receiver.acked == [f"m{i}" for i in range(7)]  # in order
    assert receiver.jobs_at_ack == [3, 6, 7]  # each batch after its own commit
    assert dispatcher.commits == [[key(0), key(1), key(2)], [key(3), key(4), key(5)], [key(6)]]


@pytest.mark.parametrize("between", ["commit_fails", "crash_before_ack"])
async def test_a_failure_between_commit_and_ack_loses_nothing_and_duplicates_nothing(
    store: Store, ws: Workspace, running: list[FakeBroker], between: str
) -> None:
    dispatcher = GatedDispatcher(store, ws)
    receiver = await start(running, store, dispatcher)
    if between == "commit_fails":
        dispatcher.fail = RuntimeError("the store went away")
    else:
        acknowledge = receiver.acknowledge

        async def crash_on_first(batch: Sequence[BrokerMessage]) -> None:
            receiver.acknowledge = acknowledge  # type: ignore[method-assign]
            raise RuntimeError("killed after the commit, before the acknowledgement")

        receiver.acknowledge = crash_on_first  # type: ignore[method-assign]
    receiver.queue = messages(7)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(receiver.wait(), 10.0)
    assert receiver.acked == []
    # The first batch is all committed, or none of it; nothing after it was.
    committed = [key(i) for i in range(3)] if between == "crash_before_ack" else []
    assert await job_keys(store) == committed
    await receiver.stop()
    running.remove(receiver)

    # The broker delivers again everything that was not acknowledged, to a new receiver.
    again = await start(running, store, dispatcher)
    again.queue = messages(7)
    await eventually(lambda: len(again.acked) == 7, what="the redelivery acknowledged")
    assert await job_keys(store) == sorted(key(i) for i in range(7))  # each exactly once


async def test_stop_lets_the_batch_being_committed_finish_and_acknowledges_it(
    store: Store, ws: Workspace, running: list[FakeBroker]
) -> None:
    dispatcher = GatedDispatcher(store, ws)
    dispatcher.gate.clear()
    receiver = await start(running, store, dispatcher)
    receiver.queue = messages(3)
    await eventually(lambda: not receiver.queue, what="the batch read")
    stopping = asyncio.create_task(receiver.stop())
    await asyncio.sleep(0.05)
    dispatcher.gate.set()
    await asyncio.wait_for(stopping, 10.0)
    running.remove(receiver)
    assert receiver.acked == ["m0", "m1", "m2"]
    assert await job_keys(store) == [key(0), key(1), key(2)]
