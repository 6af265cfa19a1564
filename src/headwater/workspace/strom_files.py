"""Strøm's task state, and artifacts outside local steps: not kept yet, refused loudly.

A Strøm script writes task state into ``$STATE_OUT_DIR`` or ``STATE: {...}`` lines,
reads the previous run's state from ``$STATE_DIR``, and templates read it as
``state.*`` (``global_state.*`` for the workspace-wide kind). Loading such a workspace
and then dropping the state would be silently wrong, so ``validate`` reports each use as
an error that says the feature is not supported yet. ``$ARTIFACTS_DIR`` is kept from
local steps (:mod:`headwater.artifacts`), and refused in a docker or pod action. (At
run time a local step gets each variable as an empty directory of its own, see
:mod:`headwater.engine.step_dirs`, so a script that slips through never writes into
``/``.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from headwater.errors import Problem
from headwater.workspace.models import RunnerKind
from headwater.workspace.yamlsource import YamlPath

if TYPE_CHECKING:
    from headwater.workspace.models import Workspace
    from headwater.workspace.yamlsource import SourceMap

__all__ = ["state_and_artifact_problems"]

_ARTIFACTS = "Strøm's artifacts (files kept from a step and served by the API)"
_STATE = "Strøm's task state kept between runs"
_GLOBAL_STATE = "Strøm's workspace-wide state kept between runs"

_VARIABLES: dict[str, str] = {
    "ARTIFACTS_DIR": _ARTIFACTS,
    "STATE_DIR": _STATE,
    "STATE_OUT_DIR": _STATE,
    "GLOBAL_STATE_DIR": _GLOBAL_STATE,
    "GLOBAL_STATE_OUT_DIR": _GLOBAL_STATE,
}
_VARIABLE = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(_VARIABLES) + r")(?![A-Za-z0-9_])")
# `echo "STATE: {...}"` / `GLOBAL_STATE: {...}`: Strøm's structured-state protocol.
_PROTOCOL = re.compile(r"(?<![A-Za-z0-9_])((?:GLOBAL_)?STATE):\s*\\?[{'\"]")
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.DOTALL)
# `state` / `global_state` as a template variable (not `steps.x.state`, not `x_state`).
_STATE_NAME = re.compile(r"(?<![\w.\'\"])(global_state|state)(?![\w])(?!\s*=[^=])")
_EXPRESSION_KEYS = frozenset({"when"})  # plain expressions, no {{ }} needed


def state_and_artifact_problems(ws: Workspace, source_map: SourceMap) -> list[Problem]:
    """An error for each action or task that uses Strøm's state or artifacts."""
    problems: list[Problem] = []
    sections: list[tuple[str, dict[str, Any]]] = [
        ("actions", {k: a.model_dump(mode="json") for k, a in ws.actions.items()}),
        ("tasks", {k: t.model_dump(mode="json") for k, t in ws.tasks.items()}),
    ]
    for section, items in sections:
        for key, dumped in items.items():
            seen: set[str] = set()
            for path, text in _strings(dumped, (section, key)):
                runner = _runner(ws, path)
                uses = _uses(text, expression=path[-1] in _EXPRESSION_KEYS, runner=runner)
                for message in uses:
                    if message in seen:
                        continue
                    seen.add(message)
                    what = "action" if section == "actions" else "task"
                    problems.append(source_map.problem(f"{what} {key!r}: {message}", path))
    return problems


def _runner(ws: Workspace, path: YamlPath) -> RunnerKind | None:
    """The runner of the action ``path`` is in (None: not in an action)."""
    if path[0] == "actions":
        return ws.actions[str(path[1])].effective_runner
    if "inline" in path:
        i = path.index("inline")
        step = ws.tasks[str(path[1])].flow.get(str(path[i - 1]))
        if step is not None and step.inline is not None:
            return step.inline.effective_runner
    return None


def _uses(text: str, *, expression: bool, runner: RunnerKind | None) -> Iterator[str]:
    for match in _VARIABLE.finditer(text):
        name = match.group(1)
        if name == "ARTIFACTS_DIR":
            # Kept from local steps (headwater.artifacts); not from containers yet.
            if runner is None or runner is RunnerKind.LOCAL:
                continue
            yield (
                f"`${name}` is not supported yet on the {runner.value} runner in headwater"
                " (artifacts are kept from local steps only)"
            )
            continue
        yield f"`${name}` is not supported yet in headwater ({_VARIABLES[name]})"
    for match in _PROTOCOL.finditer(text):
        what = _GLOBAL_STATE if match.group(1).startswith("GLOBAL") else _STATE
        yield f"`{match.group(1)}:` output lines are not supported yet in headwater ({what})"
    parts = [text] if expression else [a or b for a, b in _TEMPLATE.findall(text)]
    for part in parts:
        for match in _STATE_NAME.finditer(part):
            name = match.group(1)
            what = _GLOBAL_STATE if name == "global_state" else _STATE
            yield f"`{name}` in templates is not supported yet in headwater ({what})"


def _strings(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))
