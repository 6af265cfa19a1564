"""Strøm's state and artifact directories in pod actions: refused loudly.

A Strøm script reads the previous run's task state from ``$STATE_DIR``, writes the next
into ``$STATE_OUT_DIR`` (``GLOBAL_*`` for the workspace-wide kind) and leaves files to
keep in ``$ARTIFACTS_DIR``. headwater keeps these directories for local and docker steps
(:mod:`headwater.engine.task_state`, :mod:`headwater.artifacts`; a container gets them
at Strøm's paths, ``/artifacts`` …, copied in and out); ``STATE:`` lines and ``state.*``
templates work with every runner. A pod action that uses one of the directories is
refused by ``validate`` with an error that says so, instead of losing the files. (At
run time a step gets each variable as an empty directory of its own, see
:mod:`headwater.engine.step_dirs`, so a script never writes into ``/``.)
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

_ARTIFACTS = "artifacts"
_STATE = "task state files"
_GLOBAL_STATE = "workspace-wide state files"

_VARIABLES: dict[str, str] = {
    "ARTIFACTS_DIR": _ARTIFACTS,
    "STATE_DIR": _STATE,
    "STATE_OUT_DIR": _STATE,
    "GLOBAL_STATE_DIR": _GLOBAL_STATE,
    "GLOBAL_STATE_OUT_DIR": _GLOBAL_STATE,
}
_VARIABLE = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(_VARIABLES) + r")(?![A-Za-z0-9_])")


def state_and_artifact_problems(ws: Workspace, source_map: SourceMap) -> list[Problem]:
    """An error for each pod action that uses Strøm's state or artifact folders."""
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
                uses = _uses(text, runner=runner)
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


def _uses(text: str, *, runner: RunnerKind | None) -> Iterator[str]:
    if runner is not RunnerKind.POD:
        return
    for match in _VARIABLE.finditer(text):
        name = match.group(1)
        yield (
            f"`${name}` is not supported yet on the {runner.value} runner in headwater"
            f" ({_VARIABLES[name]} are kept from local and docker steps only)"
        )


def _strings(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))
