"""The workspace: YAML (or SDK) declarations of actions, tasks, triggers and secrets.

``load_workspace(path)`` returns a validated ``Workspace`` or raises ``WorkspaceError``
with every problem; ``check_workspace(path)`` returns a ``Report`` with the problems
(errors, warnings and notes) and the workspace when it is valid.

The names below load on first use: a process that needs only the models (an SDK
consumer worker imports ``headwater.workspace.models``) does not pay for the loader's
YAML, Jinja and cron parsers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headwater.workspace.inputs import apply_input_schema
    from headwater.workspace.loader import Report, check_workspace, load_workspace
    from headwater.workspace.models import (
        Action,
        EventSourceTrigger,
        InputField,
        SchedulerTrigger,
        Step,
        Task,
        Trigger,
        WebhookTrigger,
        Workspace,
    )
    from headwater.workspace.secrets import Redactor, resolve_secrets
    from headwater.workspace.templating import TemplateEngine, build_context, is_truthy

_MODULE_OF = {
    "apply_input_schema": "inputs",
    "Report": "loader",
    "check_workspace": "loader",
    "load_workspace": "loader",
    "Action": "models",
    "EventSourceTrigger": "models",
    "InputField": "models",
    "SchedulerTrigger": "models",
    "Step": "models",
    "Task": "models",
    "Trigger": "models",
    "WebhookTrigger": "models",
    "Workspace": "models",
    "Redactor": "secrets",
    "resolve_secrets": "secrets",
    "TemplateEngine": "templating",
    "build_context": "templating",
    "is_truthy": "templating",
}

__all__ = [
    "Action",
    "EventSourceTrigger",
    "InputField",
    "Redactor",
    "Report",
    "SchedulerTrigger",
    "Step",
    "Task",
    "TemplateEngine",
    "Trigger",
    "WebhookTrigger",
    "Workspace",
    "apply_input_schema",
    "build_context",
    "check_workspace",
    "is_truthy",
    "load_workspace",
    "resolve_secrets",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"headwater.workspace.{module}"), name)
    globals()[name] = value  # once: later lookups skip this function
    return value
