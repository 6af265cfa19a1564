"""``sqs``: an Amazon SQS queue (or an SQS-compatible endpoint)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.sqs.receiver import SqsReceiver, SqsSettings
from headwater.workspace.receiver_triggers import SqsTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["SqsReceiver", "SqsSettings", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, SqsTrigger):
        raise TypeError(f"not an sqs trigger: {type(trigger).__name__}")
    return SqsReceiver(SqsSettings.from_trigger(trigger, render), trigger, templates)
