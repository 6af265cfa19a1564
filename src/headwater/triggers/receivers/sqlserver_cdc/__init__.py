"""``sqlserver_cdc``: inserts, updates and deletes recorded by SQL Server's change data
capture, polled by LSN from a checkpoint in headwater's store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.sqlserver_cdc.receiver import (
    ChangesLostError,
    SqlServerCdcReceiver,
)
from headwater.workspace.receiver_triggers import SqlServerCdcTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["ChangesLostError", "SqlServerCdcReceiver", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, SqlServerCdcTrigger):
        raise TypeError(f"not a sqlserver_cdc trigger: {type(trigger).__name__}")
    return SqlServerCdcReceiver(str(render(trigger.url, "url")), trigger, templates)
