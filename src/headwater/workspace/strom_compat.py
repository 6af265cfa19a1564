"""Strøm keys headwater does not implement yet: refused with a message that says so.

A Strøm workspace that uses one of these must not load and then silently do something
else, so the schema error for such a key names the feature and says "not supported
yet" instead of "unknown key". (The README's "Coming from Strøm" table lists them.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from headwater.errors import Problem, Severity
from headwater.workspace.models import TaskMode, WebhookInputShape, WebhookTrigger

if TYPE_CHECKING:
    from headwater.workspace.models import Workspace
    from headwater.workspace.yamlsource import SourceMap

__all__ = ["NOT_YET_KEYS", "NOT_YET_TYPES", "no_effect_problems", "not_yet_key", "not_yet_type"]

_AGENT = "Strøm's agent actions"

# (model class name, key) -> what it is in Strøm, and what to do instead.
NOT_YET_KEYS: dict[tuple[str, str], str] = {
    **{
        ("Action", key): _AGENT
        for key in (
            "provider",
            "model",
            "system_prompt",
            "prompt",
            "temperature",
            "max_tokens",
            "tools",
            "max_turns",
            "interactive",
        )
    },
}

# Action/step `type:` values of Strøm that headwater does not run yet.
NOT_YET_TYPES: dict[str, str] = {
    "agent": _AGENT,
}


def not_yet_key(models: Iterable[str], key: str) -> str | None:
    """The message for a Strøm key not supported yet on any of ``models``, or None."""
    for model in models:
        what = NOT_YET_KEYS.get((model, key))
        if what is not None:
            return f"`{key}` is not supported yet in headwater ({what})"
    return None


def not_yet_type(value: object) -> str | None:
    what = NOT_YET_TYPES.get(value) if isinstance(value, str) else None
    if what is None:
        return None
    return f"`type: {value}` is not supported yet in headwater ({what})"


def no_effect_problems(ws: Workspace, source_map: SourceMap) -> list[Problem]:
    """Warnings for keys that are accepted (Strøm writes them) but change nothing here."""
    problems: list[Problem] = []
    for name, task in ws.tasks.items():
        # Strøm knows one mode, `distributed` (the default, what happens here too).
        if task.mode is TaskMode.LOCAL:
            problems.append(
                source_map.problem(
                    f"task {name!r}: `mode: local` has no effect in headwater: every job runs"
                    " on one worker that claims it (as `distributed` does); remove it",
                    ("tasks", name, "mode"),
                    severity=Severity.WARNING,
                    at_key=True,
                )
            )
    problems.extend(_webhook_shape_problems(ws, source_map))
    return problems


_REQUEST_FIELD = re.compile(r"\binput\s*(?:\.\s*|\[\s*['\"])(body|headers|method|query)\b")


def _webhook_shape_problems(ws: Workspace, source_map: SourceMap) -> list[Problem]:
    # A Strøm task behind a webhook reads `input.body`; headwater's default shape puts
    # the body's fields at the top level, so that would fail at run time.
    problems: list[Problem] = []
    for key, trigger in ws.triggers.items():
        if not isinstance(trigger, WebhookTrigger):
            continue
        if trigger.input_shape is WebhookInputShape.REQUEST:
            continue
        task = ws.tasks.get(trigger.task)
        if task is None:
            continue
        texts = list(_strings(task.model_dump(mode="json")))
        for step in task.flow.values():
            if step.inline is None and step.action not in ws.actions:
                continue
            texts.extend(_strings(ws.action_for(step).model_dump(mode="json")))
        read = sorted(
            {m.group(1) for t in texts for m in _REQUEST_FIELD.finditer(t)} - task.input.keys()
        )
        if read:
            names = ", ".join(f"`input.{name}`" for name in read)
            problems.append(
                source_map.problem(
                    f"trigger {key!r}: task {trigger.task!r} reads {names}, but this webhook"
                    " makes the body's fields the input; set `input_shape: request` for"
                    " Strøm's {body, headers, method, query}",
                    ("triggers", key),
                    severity=Severity.WARNING,
                    at_key=True,
                )
            )
    return problems


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
