"""What only the SQS receiver does: keep a slow batch invisible, message attributes."""

from __future__ import annotations

import asyncio

import pytest

from headwater.dispatch.dispatcher import Dispatcher, DispatchOutcome, PreparedBatch
from tests.integration.receivers.conftest import Rig, eventually

pytestmark = pytest.mark.parametrize("harness", ["sqs"], indirect=True)


class _SlowDispatcher(Dispatcher):
    """Commits take longer than the visibility timeout (2 s)."""

    async def commit(
        self, batch: PreparedBatch, cursor: tuple[str, str] | None = None
    ) -> list[DispatchOutcome]:
        await asyncio.sleep(3.5)
        return await super().commit(batch, cursor)


async def test_a_batch_that_commits_slowly_stays_invisible_to_other_consumers(rig: Rig) -> None:
    await rig.harness.publish([{"n": 1}])
    await rig.start(_SlowDispatcher(rig.store, rig.workspace))
    client, queue_url = rig.harness.client, rig.harness.queue_url  # type: ignore[attr-defined]
    await asyncio.sleep(0.5)  # the receiver holds the message now
    # Another consumer polls for longer than the visibility timeout: it never sees it.
    for _ in range(4):
        reply = await client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)
        assert reply.get("Messages", []) == []
    (job,) = await rig.wait_jobs(1)
    assert job.input["metadata"]["receive_count"] == 1
    await eventually(lambda: _empty(rig), what="the message deleted")


async def test_message_attributes_arrive_as_metadata(rig: Rig) -> None:
    await rig.start()
    client, queue_url = rig.harness.client, rig.harness.queue_url  # type: ignore[attr-defined]
    await client.send_message(
        QueueUrl=queue_url,
        MessageBody='{"n": 1}',
        MessageAttributes={"tenant": {"DataType": "String", "StringValue": "acme"}},
    )
    (job,) = await rig.wait_jobs(1)
    meta = job.input["metadata"]
    assert meta["attributes"] == {"tenant": "acme"}
    assert meta["queue_url"] == queue_url and "sent_timestamp_ms" in meta


async def _empty(rig: Rig) -> bool:
    return await rig.harness.unacked() == 0 and await rig.harness.undelivered() == 0
