"""SQL Server change data capture as an event source: each change becomes one job.

SQL Server's capture job copies every insert, update and delete of a CDC-enabled table
into its change table, stamped with the transaction's commit LSN. This receiver polls
``cdc.fn_cdc_get_all_changes_<instance>`` from its checkpoint (the position of the last
change whose job committed, kept in headwater's store) up to
``sys.fn_cdc_get_max_lsn()``, in (LSN, seqval, operation) order, and writes the
checkpoint only after the jobs committed: a crash in between reads the same changes
again, and their dedup keys (instance + LSN + seqval + operation) make no second job.

CDC's cleanup job deletes changes older than its retention (3 days by default). If
headwater was down longer, changes after the checkpoint may be gone: the receiver sees
the instance's oldest LSN (``sys.fn_cdc_get_min_lsn``) past the checkpoint and stops
with ``ChangesLostError`` (the trigger is marked failed, not retried), unless
``if_changes_lost: skip_and_record``, which keeps a dead letter naming the gap and goes
on from the oldest change still kept. It never skips in silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from headwater.errors import ReceiverHaltedError
from headwater.triggers.receivers.base import ReceiverLag
from headwater.triggers.receivers.common import BatchReceiver, BrokerMessage
from headwater.triggers.receivers.sqlserver_cdc import queries
from headwater.triggers.receivers.sqlserver_cdc.changes import Change, Position, pair_changes
from headwater.triggers.receivers.sqlserver_cdc.queries import CdcQueries, CdcQueryError
from headwater.url_secrets import hide_password
from headwater.workspace.receiver_triggers.sqlserver_cdc import SqlServerCdcTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["ChangesLostError", "SqlServerCdcReceiver"]


class ChangesLostError(ReceiverHaltedError):
    """CDC's cleanup removed changes after the checkpoint before they were read."""


class SqlServerCdcReceiver(BatchReceiver):
    trigger_type = "sqlserver_cdc"
    dropped = (ConnectionError, OSError)

    def __init__(self, url: str, trigger: SqlServerCdcTrigger, templates: TemplateEngine) -> None:
        super().__init__(templates, trigger)
        self._url = url
        self.trigger = trigger
        self._db: CdcQueries | None = None
        self._position: Position | None = None  # the checkpoint: after this, nothing done

    def public_settings(self) -> dict[str, Any]:
        t = self.trigger
        return {
            "url": hide_password(self._url),
            "capture_instance": t.capture_instance,
            "payload_column": t.payload_column,
            "poll_secs": t.poll_secs,
            "batch_size": self._batch_size,
        }

    # -- connection --------------------------------------------------------------------
    async def connect(self) -> None:
        t = self.trigger
        try:
            self._db = await queries.open_queries(
                self._url,
                appname=f"headwater:sqlserver_cdc:{self.ctx.source_id}"[:128],
                login_timeout=t.login_timeout_secs,
                query_timeout=t.query_timeout_secs,
            )
        except CdcQueryError as exc:  # a login refused is worth its own words
            raise CdcQueryError(f"cannot connect to SQL Server: {exc}") from exc
        checkpoint = await self.ctx.get_checkpoint()
        if checkpoint is not None and "lsn" in checkpoint:
            self._position = Position.from_checkpoint(checkpoint)
        else:
            self._position = None
        bounds = await self._bounds()  # checks the instance, and a checkpoint's age
        if self._position is None and t.start == "end" and bounds.max_lsn is not None:
            self._position = Position(bounds.max_lsn)  # all of that LSN counts as done
            await self.ctx.put_checkpoint(self._position.to_checkpoint())

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    def _queries(self) -> CdcQueries:
        if self._db is None:
            raise ConnectionError("the SQL Server connection is closed")
        return self._db

    async def _bounds(self) -> queries.Bounds:
        """The instance's LSN range; stops (or records the gap) when cleanup passed the
        checkpoint."""
        t = self.trigger
        position = self._position
        bounds = await self._queries().bounds(
            t.capture_instance, None if position is None else position.lsn
        )
        if bounds.min_lsn is None:
            raise CdcQueryError(
                f"capture instance {t.capture_instance!r} not found: CDC is not enabled for"
                " it, or this login may not read its change table"
                " (sys.fn_cdc_get_min_lsn returned 0x00)"
            )
        # The first change not yet read is at the checkpoint's LSN (mid-transaction) or
        # at the next LSN (whole transaction done); cleanup moved the low end past it.
        mid_transaction = position is not None and position.seqval is not None
        first_needed = position.lsn if position and mid_transaction else bounds.next_lsn
        if position is not None and first_needed is not None and first_needed < bounds.min_lsn:
            await self._changes_lost(position, bounds.min_lsn)
        return bounds

    async def _changes_lost(self, position: Position, min_lsn: bytes) -> None:
        t = self.trigger
        gap = {
            "capture_instance": t.capture_instance,
            "checkpoint_lsn": "0x" + position.lsn.hex(),
            "oldest_kept_lsn": "0x" + min_lsn.hex(),
        }
        why = (
            f"changes of capture instance {t.capture_instance!r} after LSN"
            f" {gap['checkpoint_lsn']} were removed by CDC cleanup before they were read"
            f" (the oldest change kept is at {gap['oldest_kept_lsn']})"
        )
        if t.if_changes_lost == "fail":
            raise ChangesLostError(
                f"{why}; to go on from the oldest change kept and record the gap, set"
                " if_changes_lost: skip_and_record (or extend the cleanup job's retention)"
            )
        key = f"{self.trigger_type}:{self.ctx.source_id}:lost:{position.lsn.hex()}"
        await self.ctx.dead_letter(gap, why, key)
        # The changes at min_lsn are still kept: resume before the first of them (an
        # empty seqval sorts before every seqval of that LSN).
        self._position = Position(min_lsn, b"", 0)
        await self.ctx.put_checkpoint(self._position.to_checkpoint())

    # -- reading -----------------------------------------------------------------------
    async def fetch(self, room: int) -> Sequence[BrokerMessage]:
        messages = await self._read(room)
        if not messages:
            await asyncio.sleep(self.trigger.poll_secs)
        return messages

    async def _read(self, room: int) -> list[BrokerMessage]:
        bounds = await self._bounds()
        if bounds.max_lsn is None:
            return []  # the capture job has recorded nothing yet
        assert bounds.min_lsn is not None
        position = self._position
        from_lsn = bounds.min_lsn if position is None else max(position.lsn, bounds.min_lsn)
        if from_lsn > bounds.max_lsn:
            return []
        # Twice the room: an update is two rows, and a cut between them is read again.
        want = 2 * room
        rows = await self._queries().changes(
            self.trigger.capture_instance, from_lsn, bounds.max_lsn, position, want
        )
        changes = pair_changes(
            self.trigger.capture_instance, rows, limit=room, complete=len(rows) < want
        )
        return [self._message(change) for change in changes]

    async def acknowledge(self, messages: Sequence[BrokerMessage]) -> None:
        if not messages:
            return
        self._position = messages[-1].handle  # changes come in read order
        assert self._position is not None
        await self.ctx.put_checkpoint(self._position.to_checkpoint())

    async def lag(self) -> ReceiverLag | None:
        db = self._db
        if db is None:
            return None
        try:
            position = self._position
            bounds = await db.bounds(
                self.trigger.capture_instance, None if position is None else position.lsn
            )
            if bounds.max_lsn is None or bounds.min_lsn is None:
                return ReceiverLag(events=0, pending=0)
            from_lsn = bounds.min_lsn if position is None else max(position.lsn, bounds.min_lsn)
            if from_lsn > bounds.max_lsn:
                return ReceiverLag(events=0, pending=0)
            n = await db.count(self.trigger.capture_instance, from_lsn, bounds.max_lsn, position)
        except (ConnectionError, OSError, CdcQueryError):
            return None
        return ReceiverLag(events=n, pending=0)

    # -- changes as jobs ---------------------------------------------------------------
    def _message(self, change: Change) -> BrokerMessage:
        t = self.trigger
        metadata: dict[str, Any] = {
            "capture_instance": change.capture_instance,
            "operation": change.operation,
            "lsn": "0x" + change.lsn.hex(),
            "seqval": "0x" + change.seqval.hex(),
        }
        if change.update_mask is not None:
            metadata["update_mask"] = "0x" + change.update_mask.hex()
        body: Any
        if t.payload_column is not None:
            row = change.after if change.after is not None else change.before
            body = (row or {}).get(t.payload_column)
            metadata.update(before=change.before, after=change.after)
        else:
            body = {"operation": change.operation, "before": change.before, "after": change.after}
        return BrokerMessage(id=change.id, body=body, metadata=metadata, handle=change.position)

    def job_input(self, message: BrokerMessage) -> dict[str, Any]:
        body: Any = message.body
        if isinstance(body, str | bytes):  # a text column: decoded like a message body
            return super().job_input(message)
        return {"payload": body, "metadata": {"id": message.id, **message.metadata}}
