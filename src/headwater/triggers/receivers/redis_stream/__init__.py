"""``redis_stream``: Redis Streams read through a consumer group (XREADGROUP / XACK)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.redis_stream.config import RedisStreamSettings
from headwater.triggers.receivers.redis_stream.receiver import TRIGGER_TYPE, RedisStreamReceiver
from headwater.workspace.models import RedisStreamTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["TRIGGER_TYPE", "RedisStreamReceiver", "RedisStreamSettings", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    """The registry's factory: settings rendered from the trigger, then the receiver."""
    if not isinstance(trigger, RedisStreamTrigger):
        raise TypeError(f"not a redis_stream trigger: {type(trigger).__name__}")
    return RedisStreamReceiver(
        RedisStreamSettings.from_trigger(trigger, render), templates, trigger
    )
