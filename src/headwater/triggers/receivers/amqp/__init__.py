"""``amqp``: a RabbitMQ (AMQP 0-9-1) queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.amqp.receiver import AmqpReceiver
from headwater.triggers.receivers.base import EventReceiver
from headwater.workspace.receiver_triggers import AmqpTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["AmqpReceiver", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, AmqpTrigger):
        raise TypeError(f"not an amqp trigger: {type(trigger).__name__}")
    return AmqpReceiver(str(render(trigger.url, "url")), trigger, templates)
