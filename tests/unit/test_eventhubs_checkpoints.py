"""The Event Hubs SDK's CheckpointStore over headwater's store: what the SDK's event
processor relies on (claims by etag, checkpoints per partition, never a rewind)."""

from __future__ import annotations

import pytest

pytest.importorskip("azure.eventhub")

from pathlib import Path

from headwater.store.memory import InMemoryStore
from headwater.triggers.receivers.eventhubs.checkpoint_store import (
    StoreCheckpointStore,
)
from headwater.triggers.receivers.eventhubs.receiver import namespace_of
from headwater.workspace.loader import check_workspace

HUB = ("ns.servicebus.windows.net", "orders", "$Default")


def _claim(partition: str, owner: str, etag: str | None = None) -> dict[str, object]:
    ns, hub, group = HUB
    return {
        "fully_qualified_namespace": ns,
        "eventhub_name": hub,
        "consumer_group": group,
        "partition_id": partition,
        "owner_id": owner,
        "etag": etag,
    }


async def test_a_claim_wins_only_with_the_etag_its_claimer_saw() -> None:
    store = InMemoryStore()
    a, b = StoreCheckpointStore(store, "ws/t"), StoreCheckpointStore(store, "ws/t")
    (won,) = await a.claim_ownership([_claim("0", "a")])
    assert won["owner_id"] == "a" and won["etag"]
    # b claims with a stale view (no etag): refused; with the current etag: it wins.
    assert list(await b.claim_ownership([_claim("0", "b")])) == []
    (taken,) = await b.claim_ownership([_claim("0", "b", won["etag"])])
    assert taken["owner_id"] == "b" and taken["etag"] != won["etag"]
    assert list(await a.claim_ownership([_claim("0", "a", won["etag"])])) == []
    owners = list(await a.list_ownership(*HUB))
    assert [(o["partition_id"], o["owner_id"]) for o in owners] == [("0", "b")]
    assert list(await a.list_ownership("other.ns", "orders", "$Default")) == []


async def test_checkpoints_are_per_partition_and_never_move_back() -> None:
    store = InMemoryStore()
    checkpoints = StoreCheckpointStore(store, "ws/t")
    ns, hub, group = HUB
    base = {"fully_qualified_namespace": ns, "eventhub_name": hub, "consumer_group": group}
    await checkpoints.update_checkpoint(
        {**base, "partition_id": "0", "offset": "0", "sequence_number": 0}
    )
    await checkpoints.update_checkpoint(
        {**base, "partition_id": "1", "offset": "7", "sequence_number": 7}
    )
    await checkpoints.update_checkpoint(
        {**base, "partition_id": "1", "offset": "3", "sequence_number": 3}
    )
    assert await checkpoints.positions(*HUB) == {"0": 0, "1": 7}
    listed = {c["partition_id"]: c for c in await checkpoints.list_checkpoints(*HUB)}
    assert listed["1"]["offset"] == "7" and listed["1"]["eventhub_name"] == "orders"
    # The trigger's checkpoint document is the one every receiver has.
    record = await store.get_state("receiver", "ws/t")
    assert record is not None and set(record.value["checkpoints"]) == {
        f"{ns}/{hub}/{group}/0",
        f"{ns}/{hub}/{group}/1",
    }


def test_namespace_of_shows_the_host_and_never_the_key() -> None:
    conn = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=r;SharedAccessKey=abc="
    assert namespace_of(conn) == "ns.servicebus.windows.net"


def test_validate_warns_of_a_connection_string_key_in_clear(tmp_path: Path) -> None:
    (tmp_path / "ws.yaml").write_text(
        "tasks:\n"
        "  handle:\n"
        "    flow:\n"
        "      run: { action: noop }\n"
        "actions:\n"
        "  noop: { type: script, script: 'true' }\n"
        "triggers:\n"
        "  clear:\n"
        "    type: eventhubs\n"
        "    target_task: handle\n"
        "    eventhub: orders\n"
        "    connection_string: Endpoint=sb://ns/;SharedAccessKeyName=r;SharedAccessKey=abc\n"
        "  templated:\n"
        "    type: eventhubs\n"
        "    target_task: handle\n"
        "    eventhub: orders\n"
        "    connection_string: 'Endpoint=sb://ns/;SharedAccessKey={{ secret.eh }}'\n"
    )
    report = check_workspace(tmp_path / "ws.yaml", {})
    clear = [p for p in report.problems if "password in clear" in p.message]
    assert [p.path[:2] for p in clear] == [("triggers", "clear")], report.problems
