"""A durable checkout: run it with ``headwater up examples/workflows/checkout.py``.

Each call below is recorded when it completes; kill the process at any point and the
next ``headwater up`` replays the function from the top, every completed call returning
its record: the order row is written once, the card charged by a step that retries,
and the wait for the warehouse holds no worker.
"""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import text

import headwater


@headwater.transaction
def reserve(session: Any, order_id: int, items: list[str]) -> int:
    """Written in the same transaction as its record: exactly once."""
    session.execute(
        text("CREATE TABLE IF NOT EXISTS example_orders (id INTEGER PRIMARY KEY, items TEXT)")
    )
    session.execute(
        text("INSERT INTO example_orders (id, items) VALUES (:id, :items)"),
        {"id": order_id, "items": ",".join(items)},
    )
    return len(items)


@headwater.step(retries=3, backoff=0.5)
def charge(order_id: int, count: int) -> str:
    """A call to the outside world: at least once (a crash before its record repeats
    it), so it passes an idempotency key; retried on failure."""
    if random.random() < 0.3:
        raise ConnectionError("the payment service did not answer")
    return f"charge-{order_id}-{count}"


@headwater.workflow
def checkout(order_id: int, items: list[str]) -> dict[str, Any]:
    count = reserve(order_id, items)
    receipt = charge(order_id, count)
    headwater.set_event("stage", "paid")
    # Wait (durably, no worker held) for the warehouse:
    #   curl -X POST localhost:8080/api/workflows/order-1/send \
    #        -H 'content-type: application/json' -d '{"topic": "shipped", "message": "DHL-42"}'
    tracking = headwater.recv("shipped", timeout=3600)
    headwater.sleep(2)  # durable too: a restart does not shorten or lengthen it
    return {"receipt": receipt, "tracking": tracking}
