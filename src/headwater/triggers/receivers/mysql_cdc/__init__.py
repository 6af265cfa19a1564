"""``mysql_cdc``: inserts, updates and deletes of MySQL/MariaDB tables, from the binlog."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.triggers.receivers.base import EventReceiver
from headwater.triggers.receivers.mysql_cdc.receiver import MysqlCdcReceiver
from headwater.workspace.receiver_triggers import MysqlCdcTrigger
from headwater.workspace.templating import TemplateEngine

__all__ = ["MysqlCdcReceiver", "create_receiver"]


def create_receiver(
    trigger: Any, render: Callable[[Any, str], Any], templates: TemplateEngine
) -> EventReceiver:
    if not isinstance(trigger, MysqlCdcTrigger):
        raise TypeError(f"not a mysql_cdc trigger: {type(trigger).__name__}")
    return MysqlCdcReceiver(str(render(trigger.url, "url")), trigger, templates)
