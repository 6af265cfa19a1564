"""Errors that show the YAML to write instead.

The seed shows an event-source trigger carrying its own ``script:``, which its own text
forbids: an event source runs a *task* (the long-lived consumer) and turns its
``OUTPUT:`` lines into jobs of ``target_task``. Rather than only saying no, the error
prints the action + task + trigger that do what the user meant, built from their own
script and names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from headwater.errors import Problem, Severity
from headwater.workspace.yamlsource import SourceMap

__all__ = ["EXECUTION_KEYS", "event_source_script_problem", "image_as_is_note", "yaml_snippet"]

# Keys that say *how to run* something: they belong on an action, never on a trigger.
EXECUTION_KEYS = frozenset(
    {
        "script",
        "source",
        "language",
        "runner",
        "image",
        "dependencies",
        "interpreter",
        "cmd",
        "command",
        "entrypoint",
        "manifest",
    }
)
_TRIGGER_OWN_KEYS = ("type", "task", "target_task")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "none", "~"})
_NAME_SUFFIXES = ("-consumer", "_consumer", "-events", "_events", "-source", "_source")


def _scalar(value: Any) -> str:
    if isinstance(value, str) and _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)


def _lines(key: str, value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, str) and "\n" in value:
        body = value.rstrip("\n").split("\n")
        return [f"{pad}{key}: |", *(f"{pad}  {line}" if line else "" for line in body)]
    if isinstance(value, Mapping) and value:
        out = [f"{pad}{key}:"]
        for k, v in value.items():
            out.extend(_lines(str(k), v, indent + 2))
        return out
    return [f"{pad}{key}: {_scalar(value)}"]


def yaml_snippet(data: Mapping[str, Any], indent: int = 0) -> str:
    """Readable block YAML for small nested mappings (multi-line strings as ``|``)."""
    out: list[str] = []
    for key, value in data.items():
        out.extend(_lines(str(key), value, indent))
    return "\n".join(out)


def _base_name(trigger: str) -> str:
    for suffix in _NAME_SUFFIXES:
        if trigger.endswith(suffix) and len(trigger) > len(suffix):
            return trigger[: -len(suffix)]
    return trigger


def event_source_script_problem(
    trigger: str, body: Mapping[str, Any], inline_keys: Sequence[str], source_map: SourceMap
) -> Problem:
    """The error for an event source that carries execution fields (``script:`` ...)."""
    base = _base_name(trigger)
    action_name, task_name = f"{base}-poll", f"{base}-consumer"
    action: dict[str, Any] = {"type": "script"}
    if "image" in body and "script" not in body and "source" not in body:
        action["type"] = "docker"
    action.update({k: body[k] for k in inline_keys})
    target = body.get("target_task") or body.get("task")
    new_trigger: dict[str, Any] = {
        "type": "event_source",
        "task": task_name,
        "target_task": target or "<the task to run for each event>",
    }
    new_trigger.update(
        {k: v for k, v in body.items() if k not in EXECUTION_KEYS and k not in _TRIGGER_OWN_KEYS}
    )
    suggestion = yaml_snippet(
        {
            "actions": {action_name: action},
            "tasks": {task_name: {"flow": {"poll": {"action": action_name}}}},
            "triggers": {trigger: new_trigger},
        },
        indent=4,
    )
    listed = ", ".join(f"`{k}:`" for k in inline_keys)
    why = ""
    if "target_task" not in body and body.get("task"):
        why = (
            f"\n(`task: {body['task']}` became the `target_task`: on an event source, `task`"
            " is the consumer that runs, `target_task` the task each event starts.)"
        )
    message = (
        f"trigger {trigger!r}: an event source cannot carry {listed}; event sources run a"
        " task (the long-running consumer) and start a job of `target_task` for each"
        " `OUTPUT:` line it prints. Put the script in an action run by a task, and point"
        f" the trigger at that task:\n\n{suggestion}{why}"
    )
    return source_map.problem(message, ("triggers", trigger, inline_keys[0]), at_key=True)


def image_as_is_note(
    body: Mapping[str, Any], path: tuple[str | int, ...], entity: str, source_map: SourceMap
) -> Problem | None:
    """A note for the seed's ``type: script`` + ``runner: docker`` + ``image`` (no script)."""
    runner = body.get("runner")
    if not (
        body.get("type") == "script"
        and runner in ("docker", "pod")
        and body.get("image")
        and body.get("script") is None
        and body.get("source") is None
    ):
        return None
    return source_map.problem(
        f"{entity}: `type: script` with `runner: {runner}`, an `image` and no script runs the"
        f" image as-is; write `type: {runner}` (Strøm's spelling, same meaning)",
        (*path, "type"),
        severity=Severity.NOTE,
    )
