"""``redis_list``: a Redis list used as a work queue (reliable-queue pattern)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.redis_list.receiver import RedisListReceiver, RedisListSettings
from headwater.workspace.receiver_triggers import RedisListTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["RedisListReceiver", "RedisListSettings", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, RedisListTrigger):
        raise TypeError(f"not a redis_list trigger: {type(trigger).__name__}")
    return RedisListReceiver(RedisListSettings.from_trigger(trigger, render), templates, trigger)
