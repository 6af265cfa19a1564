"""A shop written with headwater's Python SDK (run it: see README.md next to this file).

- ``place_order`` writes an order and its ``OrderPlaced`` event in ONE transaction
  (``headwater.send_event``): no order without its event, no event for a rolled-back
  order;
- ``ledger`` (EXACTLY_ONCE) books each order once, in the consumer's transaction,
  whatever crashes;
- ``receipt`` (AT_LEAST_ONCE) "emails" a receipt: outside the database, so it may repeat
  after a crash, never skip;
- ``inbox`` is a receiver of our own (``InboxReceiver``): each JSON file dropped into a
  folder becomes a job of the ``refund`` function.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import headwater
from headwater import Guarantee, ReceiverContext, StreamEvent

ORDERS = "stream:shop:orders"
registry = headwater.Registry(app="shop")


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "shop_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    cents: Mapped[int]


class LedgerEntry(Base):
    __tablename__ = "shop_ledger"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("shop_orders.id"))
    cents: Mapped[int]
    event_uuid: Mapped[str] = mapped_column(String(36))


def place_order(session: Session, customer: str, cents: int) -> Order:
    """Business code: the order and its event commit together (the caller commits)."""
    order = Order(customer=customer, cents=cents)
    session.add(order)
    session.flush()  # the order's id, for the event
    headwater.send_event(
        session, ORDERS, "OrderPlaced", {"order_id": order.id, "customer": customer, "cents": cents}
    )
    return order


@registry.consumer(ORDERS, name="ledger")
def ledger(event: StreamEvent, session: Session) -> None:
    """Books the order. Runs in the worker's transaction: no session.commit() here."""
    if event.event_type != "OrderPlaced":
        return
    p = event.payload
    session.add(LedgerEntry(order_id=p["order_id"], cents=p["cents"], event_uuid=event.event_uuid))


@registry.consumer(ORDERS, name="receipt", guarantee=Guarantee.AT_LEAST_ONCE, max_attempts=5)
def receipt(event: StreamEvent) -> None:
    """A side effect outside the database: may repeat after a crash, never skipped."""
    print(f"receipt for order {event.payload['order_id']} → {event.payload['customer']}")


class InboxReceiver(headwater.EventReceiver):
    """Each ``*.json`` file in ``folder`` becomes one event. The checkpoint is the last
    file name handled, so files dropped while nothing ran are backfilled at start, and
    a file's name is its dedup key, so a re-read never makes a second job."""

    def __init__(self, folder: str, poll_secs: float = 1.0) -> None:
        self.folder = Path(folder)
        self.poll_secs = float(poll_secs)
        self._task: asyncio.Task[None] | None = None

    async def start(self, ctx: ReceiverContext) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._ctx = ctx
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        checkpoint = await self._ctx.get_checkpoint() or {}
        done = checkpoint.get("last", "")
        while True:
            for path in sorted(self.folder.glob("*.json")):
                if path.name <= done:
                    continue
                try:
                    payload = json.loads(path.read_text())
                except ValueError as exc:
                    await self._ctx.dead_letter(path.read_text(), str(exc), f"inbox:{path.name}")
                else:
                    meta = {"file": path.name, "seen_at": datetime.now(UTC).isoformat()}
                    event = self._ctx.event({"payload": payload, "metadata": meta}, path.name)
                    await self._ctx.dispatch([event])  # returns once the job is committed
                done = path.name
                await self._ctx.put_checkpoint({"last": done})
            await asyncio.sleep(self.poll_secs)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def wait(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder)}


@registry.on_receiver(InboxReceiver, name="inbox", folder=os.environ.get("SHOP_INBOX", "inbox"))
def refund(payload: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """A job per file: its return value is the job's output."""
    return {"refund_cents": int(payload.get("cents", 0)), "file": metadata["file"]}


def totals(session: Session) -> dict[str, int]:
    orders = session.scalars(select(Order)).all()
    entries = session.scalars(select(LedgerEntry)).all()
    return {"orders": len(orders), "ledger_entries": len(entries)}
