"""Each order message starts a durable workflow, exactly once (issue 22).

The receivers of a class share their connection through the class's defaults; each
message's dedup key (stream + entry id) is its workflow's id, so a redelivery, or a
backfill after downtime, never runs a workflow twice. The workflow's steps are recorded:
after a crash it runs again from the top and every completed step returns its record.

    cd examples/sdk
    export HEADWATER_DATABASE_URL=sqlite:///$PWD/fulfilment.db
    headwater consumers list fulfilment.py     # receivers → workflows, effective settings
    headwater up fulfilment.py &
    redis-cli XADD orders '*' payload '{"order": 7, "lines": 3}'
    headwater jobs                             # one `order-placed` job per message
"""

from __future__ import annotations

import os
from typing import Any

import headwater

REDIS = os.environ.get("HEADWATER_REDIS_URL", "redis://127.0.0.1:6379/0")


@headwater.step(retries=3, backoff=0.5)
def reserve(order: int, lines: int) -> str:
    return f"reservation-{order}-{lines}"


@headwater.step
def ship(reservation: str) -> str:
    return f"shipment-of-{reservation}"


@headwater.workflow
def fulfil(payload: dict[str, Any], metadata: dict[str, Any]) -> dict[str, str]:
    reservation = reserve(payload["order"], payload.get("lines", 1))
    headwater.sleep(1)  # durable: the worker slot is free meanwhile, a restart keeps it
    return {"shipment": ship(reservation), "message": metadata["id"]}


@headwater.workflow
def cancel(payload: dict[str, Any], metadata: dict[str, Any]) -> str:
    return f"cancelled {payload['order']}"


@headwater.receiver_defaults("redis_stream", url=REDIS, group="fulfilment", start_id="0")
class Orders:
    # A receiver stacked on a workflow: each message starts one run of it.
    @staticmethod
    @headwater.on_redis_stream("orders", name="order-placed", max_in_flight=100)
    @headwater.workflow(name="fulfil_placed")
    def placed(payload: dict[str, Any], metadata: dict[str, Any]) -> Any:
        return fulfil(payload, metadata)  # a child workflow: a durable wait for its end


# Or name the workflow: a receiver with no function of its own.
headwater.on_redis_stream(
    "cancellations", name="order-cancelled", url=REDIS, start_id="0", target_workflow=cancel
)
