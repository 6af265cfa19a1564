"""The workspace: YAML (or SDK) declarations of actions, tasks, triggers and secrets.

``load_workspace(path)`` returns a validated ``Workspace`` or raises ``WorkspaceError``
with every problem; ``check_workspace(path)`` returns a ``Report`` with the problems
(errors, warnings and notes) and the workspace when it is valid.
"""

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
