"""A receiver that lives outside headwater: one folder, added with one registry call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.workspace.receiver_triggers import RECEIVERS, ReceiverKind
from headwater.workspace.templating import TemplateEngine
from tests.integration.toy_receiver.model import ToyTrigger
from tests.integration.toy_receiver.receiver import ToyReceiver

__all__ = ["ToyTrigger", "create_receiver", "register"]


def register() -> ReceiverKind:
    return RECEIVERS.register(ToyTrigger, runtime=__name__)


def create_receiver(
    trigger: ToyTrigger, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    return ToyReceiver(prefix=render(trigger.prefix, "prefix"), count=trigger.count)
