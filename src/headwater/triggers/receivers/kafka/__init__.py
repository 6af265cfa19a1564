"""``kafka``: a Kafka topic read in a consumer group."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.kafka.receiver import KafkaReceiver
from headwater.workspace.receiver_triggers import KafkaTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["KafkaReceiver", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, KafkaTrigger):
        raise TypeError(f"not a kafka trigger: {type(trigger).__name__}")
    password = (
        None
        if trigger.sasl_password is None
        else str(render(trigger.sasl_password, "sasl_password"))
    )
    servers = str(render(trigger.bootstrap_servers, "bootstrap_servers"))
    return KafkaReceiver(servers, password, trigger, templates)
