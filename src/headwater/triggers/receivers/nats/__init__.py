"""``nats``: a NATS JetStream stream read by a durable pull consumer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.nats.receiver import NatsReceiver, NatsSettings
from headwater.workspace.receiver_triggers import NatsTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["NatsReceiver", "NatsSettings", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, NatsTrigger):
        raise TypeError(f"not a nats trigger: {type(trigger).__name__}")
    return NatsReceiver(NatsSettings.from_trigger(trigger, render), trigger, templates)
