"""``pulsar``: an Apache Pulsar topic read in a subscription."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.pulsar.receiver import PulsarReceiver
from headwater.workspace.receiver_triggers import PulsarTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["PulsarReceiver", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, PulsarTrigger):
        raise TypeError(f"not a pulsar trigger: {type(trigger).__name__}")
    url = str(render(trigger.service_url, "service_url"))
    token = None if trigger.auth_token is None else str(render(trigger.auth_token, "auth_token"))
    return PulsarReceiver(url, token, trigger, templates)
