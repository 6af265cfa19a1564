"""``postgres``: new rows of a PostgreSQL table, woken by LISTEN/NOTIFY."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.postgres.receiver import PostgresReceiver
from headwater.workspace.receiver_triggers import PostgresTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["PostgresReceiver", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, PostgresTrigger):
        raise TypeError(f"not a postgres trigger: {type(trigger).__name__}")
    return PostgresReceiver(str(render(trigger.url, "url")), trigger, templates)
