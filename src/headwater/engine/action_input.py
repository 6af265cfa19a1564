"""The input an action receives: the step's rendered input completed from the action's
own ``input:`` schema, the way Strøm prepares it.

For every field the action declares and the step did not give:
1. the job's input field of the same name, when it is set (not null);
2. else the field's ``default`` (strings with a template rendered against the step's
   context, e.g. ``"{{ secret.api_key }}"``; objects and lists rendered inside).
Fields the step gave always win, and fields the action does not declare pass through.
A field the step gave is not rendered a second time (a value coming from an event
stays data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from headwater.workspace.models import Action
from headwater.workspace.templating import TemplateEngine

__all__ = ["complete_action_input"]


def complete_action_input(
    step_input: Any,
    action: Action,
    job_input: Any,
    templates: TemplateEngine,
    context: Callable[[], Mapping[str, Any]],
    where: str,
) -> Any:
    """``step_input`` with the action's missing fields filled in (a new dict if any)."""
    if not action.input or not isinstance(step_input, Mapping):
        return step_input
    missing = [name for name in action.input if name not in step_input]
    if not missing:
        return step_input
    merged = dict(step_input)
    from_job = job_input if isinstance(job_input, Mapping) else {}
    for name in missing:
        value = from_job.get(name)
        if value is not None:
            merged[name] = value
            continue
        default = action.input[name].default
        if default is not None:
            merged[name] = templates.render(default, context(), where=f"{where} default {name!r}")
    return merged
