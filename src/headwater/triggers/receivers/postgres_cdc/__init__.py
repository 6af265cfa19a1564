"""``postgres_cdc``: inserts, updates and deletes of PostgreSQL tables, from a logical
replication slot (``pgoutput``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.postgres_cdc.receiver import PostgresCdcReceiver
from headwater.workspace.receiver_triggers import PostgresCdcTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["PostgresCdcReceiver", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, PostgresCdcTrigger):
        raise TypeError(f"not a postgres_cdc trigger: {type(trigger).__name__}")
    return PostgresCdcReceiver(str(render(trigger.url, "url")), trigger, templates)
