"""The Event Hubs SDK's ``CheckpointStore`` kept in headwater's store, not a blob account.

The SDK's event processor asks it for the partitions' checkpoints when it starts (where
to read from) and for their ownership every load-balancing round (which processor reads
which partition); the receiver writes a partition's checkpoint only after its jobs
committed. Both are state documents of the trigger, written compare-and-set:

- ``receiver/<workspace>/<trigger>``: ``{"checkpoints": {"<ns>/<hub>/<group>/<pid>": {…}}}``,
  the trigger's checkpoint like every receiver's (a later sequence number wins a race);
- ``eventhubs_ownership/<workspace>/<trigger>``: ``{"<ns>/<hub>/<group>/<pid>": {…}}``;
  a claim succeeds only with the etag the claimer last saw, as with blobs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from azure.eventhub.aio import CheckpointStore

from headwater.errors import ConflictError
from headwater.store.base import Store
from headwater.triggers.receivers.base import RECEIVER_NAMESPACE

__all__ = ["OWNERSHIP_NAMESPACE", "StoreCheckpointStore", "partition_path"]

OWNERSHIP_NAMESPACE = "eventhubs_ownership"
_ATTEMPTS = 10

Document = dict[str, Any]


def partition_path(namespace: str, eventhub: str, group: str, partition: str) -> str:
    return f"{namespace}/{eventhub}/{group}/{partition}"


def _prefix(namespace: str, eventhub: str, group: str) -> str:
    return f"{namespace}/{eventhub}/{group}/"


class StoreCheckpointStore(CheckpointStore):
    """One trigger's checkpoints and partition ownership, in headwater's store."""

    def __init__(self, store: Store, key: str) -> None:
        self._store = store
        self._key = key

    # -- ownership ---------------------------------------------------------------------
    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **_: Any
    ) -> Iterable[dict[str, Any]]:
        owners, _version = await self._read(OWNERSHIP_NAMESPACE)
        prefix = _prefix(fully_qualified_namespace, eventhub_name, consumer_group)
        return [dict(o) for path, o in owners.items() if path.startswith(prefix)]

    async def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **_: Any
    ) -> Iterable[dict[str, Any]]:
        wanted = list(ownership_list)
        claimed: list[dict[str, Any]] = []

        def claim(owners: Document) -> Document:
            claimed.clear()
            for ownership in wanted:
                path = partition_path(
                    ownership["fully_qualified_namespace"],
                    ownership["eventhub_name"],
                    ownership["consumer_group"],
                    ownership["partition_id"],
                )
                current = owners.get(path)
                # The claimer must have seen the current owner (its etag), as with blobs.
                if current is not None and current.get("etag") != ownership.get("etag"):
                    continue
                won = {**ownership, "etag": uuid.uuid4().hex, "last_modified_time": time.time()}
                owners[path] = won
                claimed.append(dict(won))
            return owners

        await self._update(OWNERSHIP_NAMESPACE, claim)
        return list(claimed)

    # -- checkpoints -------------------------------------------------------------------
    async def update_checkpoint(self, checkpoint: dict[str, Any], **_: Any) -> None:
        path = partition_path(
            checkpoint["fully_qualified_namespace"],
            checkpoint["eventhub_name"],
            checkpoint["consumer_group"],
            checkpoint["partition_id"],
        )
        entry = {
            "offset": checkpoint.get("offset"),
            "sequence_number": checkpoint.get("sequence_number"),
        }

        def advance(document: Document) -> Document:
            checkpoints = dict(document.get("checkpoints") or {})
            stored = checkpoints.get(path) or {}
            # Two writers racing (a rebalance): the later position wins, never a rewind.
            if _seq(stored) < _seq(entry):
                checkpoints[path] = entry
            return {**document, "checkpoints": checkpoints}

        await self._update(RECEIVER_NAMESPACE, advance)

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **_: Any
    ) -> Iterable[dict[str, Any]]:
        document, _version = await self._read(RECEIVER_NAMESPACE)
        prefix = _prefix(fully_qualified_namespace, eventhub_name, consumer_group)
        return [
            {
                "fully_qualified_namespace": fully_qualified_namespace,
                "eventhub_name": eventhub_name,
                "consumer_group": consumer_group,
                "partition_id": path[len(prefix) :],
                **entry,
            }
            for path, entry in (document.get("checkpoints") or {}).items()
            if path.startswith(prefix)
        ]

    async def positions(self, namespace: str, eventhub: str, group: str) -> dict[str, int]:
        """The checkpointed sequence number of each partition (for the lag)."""
        return {
            c["partition_id"]: int(c["sequence_number"])
            for c in await self.list_checkpoints(namespace, eventhub, group)
            if c.get("sequence_number") is not None
        }

    # -- compare-and-set on one document -----------------------------------------------
    async def _read(self, namespace: str) -> tuple[Document, int]:
        record = await self._store.get_state(namespace, self._key)
        if record is None:
            return {}, 0
        return dict(record.value), record.version

    async def _update(
        self, namespace: str, change: Callable[[Document], Mapping[str, Any]]
    ) -> None:
        for _ in range(_ATTEMPTS):
            document, version = await self._read(namespace)
            try:
                await self._store.put_state(namespace, self._key, change(document), version)
            except ConflictError:
                continue  # another writer got there first: re-read and re-apply
            return
        raise ConflictError(f"{namespace} of {self._key!r} keeps changing under us")


def _seq(checkpoint: Mapping[str, Any]) -> int:
    value = checkpoint.get("sequence_number")
    return -1 if value is None else int(value)
