"""``mqtt``: an MQTT topic filter, QoS 1 on a persistent session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.mqtt.receiver import MqttReceiver
from headwater.workspace.receiver_triggers import MqttTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["MqttReceiver", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, MqttTrigger):
        raise TypeError(f"not an mqtt trigger: {type(trigger).__name__}")
    password = None if trigger.password is None else str(render(trigger.password, "password"))
    return MqttReceiver(str(render(trigger.url, "url")), password, trigger, templates)
