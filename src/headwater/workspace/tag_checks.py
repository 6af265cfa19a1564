"""Steps a worker cannot run for want of a tag: ``validate`` warns, ``up`` says so.

A step's tags are its action's and its own (``Workspace.step_tags``). The runner tags
(script, docker, pod, function) are the embedded worker's anyway; any other tag is a
worker's only when it is configured with it (``headwater up --tags``, ``headwater worker
--tags``). A step whose tags no worker has is never run by the wrong one: its job waits,
pending, with the reason in its ``error``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from headwater.errors import Problem, Severity
from headwater.workspace.models import ABILITY_TAGS, Workspace
from headwater.workspace.yamlsource import SourceMap, YamlPath

__all__ = ["UnservedStep", "tag_problems", "unserved_steps"]


@dataclass(frozen=True, slots=True)
class UnservedStep:
    task: str
    step: str
    missing: frozenset[str]
    on_step: bool  # the tags are written on the step (else on its action)

    def describe(self) -> str:
        need = ", ".join(sorted(self.missing))
        return (
            f"step {self.step!r} of task {self.task!r} needs the worker tags {need}: the"
            f" worker of `headwater up` runs it only when started with `--tags {need}`;"
            " otherwise its job waits (pending) for a worker with them"
        )


def unserved_steps(ws: Workspace, worker_tags: frozenset[str]) -> Iterator[UnservedStep]:
    """Every step of ``ws`` that a worker with the runner tags and ``worker_tags`` lacks a
    tag for."""
    have = ABILITY_TAGS | worker_tags
    for task_name, task in ws.tasks.items():
        for step_name, step in task.flow.items():
            if step.inline is None and (step.action is None or step.action not in ws.actions):
                continue
            missing = ws.step_tags(step) - have
            if missing:
                on_step = bool(missing & frozenset(step.tags))
                yield UnservedStep(task_name, step_name, frozenset(missing), on_step)


def tag_problems(
    ws: Workspace, source_map: SourceMap, worker_tags: frozenset[str] = frozenset()
) -> list[Problem]:
    problems: list[Problem] = []
    for found in unserved_steps(ws, worker_tags):
        step = ws.tasks[found.task].flow[found.step]
        path: YamlPath = ("tasks", found.task, "flow", found.step)
        if found.on_step:
            path = (*path, "tags")
        elif step.inline is None and step.action is not None:
            path = ("actions", step.action, "tags")
        problems.append(
            source_map.problem(found.describe(), path, severity=Severity.WARNING, at_key=True)
        )
    return problems
