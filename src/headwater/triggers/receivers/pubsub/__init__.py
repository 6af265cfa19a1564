"""``pubsub``: a Google Cloud Pub/Sub subscription (or the Pub/Sub emulator)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.pubsub.receiver import PubsubReceiver, PubsubSettings
from headwater.workspace.receiver_triggers import PubsubTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["PubsubReceiver", "PubsubSettings", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, PubsubTrigger):
        raise TypeError(f"not a pubsub trigger: {type(trigger).__name__}")
    return PubsubReceiver(PubsubSettings.from_trigger(trigger, render), trigger, templates)
