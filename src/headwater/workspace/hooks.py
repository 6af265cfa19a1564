"""Hook jobs run one action: their task, ``_hook:<action>``, is made from the action.

Strøm names a hook job's task ``_hook:<action>`` and gives it one step, ``hook``, whose
input is the rendered hook input. The workspace does not hold these tasks; every place
that looks a job's task up (the dispatcher, the executor) goes through ``find_task``.
"""

from __future__ import annotations

from headwater.workspace.models import ActionType, Step, Task, Workspace

__all__ = [
    "HOOK_STEP",
    "HOOK_TASK_PREFIX",
    "find_task",
    "hook_task_name",
    "is_approval_step",
    "is_hook_task",
]

HOOK_TASK_PREFIX = "_hook:"
HOOK_STEP = "hook"


def hook_task_name(action: str) -> str:
    return f"{HOOK_TASK_PREFIX}{action}"


def is_hook_task(name: str) -> bool:
    return name.startswith(HOOK_TASK_PREFIX)


def find_task(workspace: Workspace, name: str) -> Task | None:
    """The task ``name`` of the workspace, or the one-step task of a hook job."""
    task = workspace.tasks.get(name)
    if task is not None or not is_hook_task(name):
        return task
    action = name[len(HOOK_TASK_PREFIX) :]
    if action not in workspace.actions:
        return None
    return Task(name=name, flow={HOOK_STEP: Step(action=action)})


def is_approval_step(workspace: Workspace, step: Step) -> bool:
    """Whether ``step`` runs a ``type: approval`` action (a gate that waits for a person)."""
    if step.inline is None and step.action not in workspace.actions:
        return False
    return workspace.action_for(step).type is ActionType.APPROVAL
