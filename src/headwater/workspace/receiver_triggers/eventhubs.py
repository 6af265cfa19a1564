from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from headwater.workspace.receiver_triggers.base import ReceiverTriggerBase

__all__ = ["EventhubsTrigger"]


class EventhubsTrigger(ReceiverTriggerBase):
    """Each event of an Azure Event Hub, read in a consumer group, becomes one job; a
    partition's checkpoint (kept in headwater's store) advances after the jobs committed."""

    secret_fields: ClassVar[tuple[str, ...]] = ("connection_string",)

    pip_extra: ClassVar[str | None] = "eventhubs"
    client_modules: ClassVar[tuple[str, ...]] = ("azure.eventhub",)
    sdk_argument: ClassVar[str | None] = "eventhub"

    type: Literal["eventhubs"]
    # Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…
    connection_string: str
    eventhub: str
    consumer_group: str = "$Default"
    starting_position: Literal["earliest", "latest"] = "earliest"  # without a checkpoint
    # How often partitions are balanced between the nodes reading this trigger; a node
    # that died leaves its partitions to the others after the ownership expires.
    load_balancing_interval_secs: float = Field(default=10.0, gt=0, le=3_600)
    ownership_expiration_secs: float | None = Field(default=None, gt=0)  # default 6×interval
    prefetch: int = Field(default=300, ge=1, le=100_000)  # the SDK's buffer (memory only)
    batch_size: int = Field(default=100, ge=1, le=10_000)
