"""``eventhubs``: an Azure Event Hub read in a consumer group, checkpointed in the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.eventhubs.checkpoint_store import StoreCheckpointStore
from headwater.triggers.receivers.eventhubs.receiver import EventhubsReceiver
from headwater.workspace.receiver_triggers import EventhubsTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["EventhubsReceiver", "StoreCheckpointStore", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, EventhubsTrigger):
        raise TypeError(f"not an eventhubs trigger: {type(trigger).__name__}")
    connection = str(render(trigger.connection_string, "connection_string"))
    return EventhubsReceiver(connection, trigger, templates)
