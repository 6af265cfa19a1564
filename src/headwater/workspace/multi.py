"""Several workspaces on one server, and steps that use another workspace's action.

A server config in Strøm's shape lists the workspaces (``PATH`` given to ``validate``,
``run``, ``up`` or ``server`` is that file)::

    workspaces:
      default: {type: folder, path: ./workspace}
      jobs: {type: folder, path: ./jobs}

Each workspace is checked on its own (its problems keep their own file:line), with the
other workspaces' action names known, so that a step's ``action: jobs.recalc`` (Strøm's
cross-workspace reference: ``<workspace>.<action>``) is checked too. A local action whose
name has a dot wins over the reference, as in Strøm.

The valid workspaces are then combined into the one ``Workspace`` the runtime serves:
- the first workspace keeps its names: its tasks are addressed as before (``task``, or
  ``<workspace>/task``), so a config with one workspace behaves as that workspace;
- every other workspace's task is ``<workspace>/<task>``, its triggers ``<workspace>/<key>``;
- every action is also ``<workspace>.<action>`` and remembers its owner: its body (script,
  env, ``source:``) uses the owner's folder and secrets, while the calling step's ``input``
  renders in the caller's context (Strøm's owner-context rule);
- the secrets of another workspace are kept under ``<workspace>/<name>``, which is how the
  step runner picks the owner's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headwater.errors import Problem, Severity
from headwater.workspace.models import Action, Hook, Step, Task, WebhookTrigger, Workspace
from headwater.workspace.yamlsource import parse_yaml_file

__all__ = [
    "QUALIFIER",
    "WorkspaceSource",
    "action_names",
    "combine",
    "is_workspaces_config",
    "later_trigger_secrets",
    "owner_secrets",
    "read_workspaces_config",
    "resolve_task_name",
    "task_workspace",
    "watched_paths",
    "webhook_clashes",
]

QUALIFIER = "/"  # between a workspace and its task (or trigger, or secret)
_IGNORED_NOTE = (
    "is a Strøm server setting; headwater takes it from its own options and ignores it here"
)


@dataclass(frozen=True, slots=True)
class WorkspaceSource:
    name: str
    path: Path


def is_workspaces_config(path: Path) -> bool:
    """A YAML file whose top level has ``workspaces:`` (a workspace file never has)."""
    if not path.is_file() or path.suffix not in (".yaml", ".yml"):
        return False
    try:
        head = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.startswith("workspaces:") for line in head.splitlines())


def read_workspaces_config(path: Path) -> tuple[list[WorkspaceSource], list[Problem]]:
    """The folders the config lists, in order, and its problems (file:line)."""
    parsed = parse_yaml_file(path)
    problems = list(parsed.problems)
    sources: list[WorkspaceSource] = []
    data = parsed.data
    if not isinstance(data, dict):
        return sources, problems
    smap = parsed.source_map
    for key in data:
        if key != "workspaces":
            problems.append(
                smap.problem(
                    f"`{key}` {_IGNORED_NOTE}", (key,), severity=Severity.WARNING, at_key=True
                )
            )
    entries = data.get("workspaces")
    if not isinstance(entries, dict) or not entries:
        problems.append(
            smap.problem(
                "`workspaces` must map names to {type: folder, path: ...}", ("workspaces",)
            )
        )
        return sources, problems
    for name, body in entries.items():
        where = ("workspaces", name)
        if not isinstance(name, str) or not name or "." in name or QUALIFIER in name:
            problems.append(
                smap.problem(
                    f"workspace name {name!r} must be non-empty without `.` or `/`",
                    where,
                    at_key=True,
                )
            )
            continue
        kind = body.get("type", "folder") if isinstance(body, dict) else "folder"
        if kind != "folder":
            problems.append(
                smap.problem(
                    f"workspace {name!r}: `type: {kind}` is not supported in headwater (only"
                    " `type: folder`); check the repository out and point `path` at it",
                    (*where, "type"),
                )
            )
            continue
        if not isinstance(body, dict) or not isinstance(body.get("path"), str):
            problems.append(smap.problem(f"workspace {name!r} needs `path: FOLDER`", where))
            continue
        for extra in sorted(set(body) - {"type", "path"}):
            problems.append(
                smap.problem(
                    f"workspace {name!r}: `{extra}` has no effect for a folder workspace",
                    (*where, extra),
                    severity=Severity.WARNING,
                    at_key=True,
                )
            )
        folder = Path(body["path"])
        folder = folder if folder.is_absolute() else path.parent / folder
        if is_workspaces_config(folder):
            problems.append(
                smap.problem(
                    f"workspace {name!r}: `path` is a config listing workspaces, not a workspace",
                    (*where, "path"),
                )
            )
            continue
        sources.append(WorkspaceSource(name, folder))
    return sources, problems


def watched_paths(path: Path) -> list[Path]:
    """What to watch for a reload: the path, and every listed folder of a config."""
    if not is_workspaces_config(path):
        return [path]
    sources, _ = read_workspaces_config(path)
    return [path, *(s.path for s in sources if s.path.exists())]


def action_names(path: Path) -> frozenset[str]:
    """The action names a workspace defines, read without checking anything else."""
    from headwater.workspace.loader import workspace_files

    names: set[str] = set()
    try:
        files, _, _ = workspace_files(path)
    except Exception:
        return frozenset()
    for file in files:
        data = parse_yaml_file(file).data
        if isinstance(data, dict) and isinstance(data.get("actions"), dict):
            names.update(str(k) for k in data["actions"])
    return frozenset(names)


def resolve_task_name(ws: Workspace, name: str) -> str:
    """``<first workspace>/task`` is that workspace's ``task`` (Strøm addresses a task by
    workspace and name); every other name is itself."""
    if name in ws.tasks:
        return name
    owner, sep, rest = name.partition(QUALIFIER)
    if sep and owner == ws.name and rest in ws.tasks:
        return rest
    return name


def task_workspace(ws: Workspace, task: str) -> str:
    """The workspace a task of the combined workspace belongs to."""
    return task.split(QUALIFIER, 1)[0] if QUALIFIER in task else ws.name


def owner_secrets(secrets: Mapping[str, str], owner: str | None) -> dict[str, str]:
    """The secrets of a later workspace ``owner`` (None: the first workspace's) out of the
    combined workspace's secrets."""
    if owner is None:
        return {k: v for k, v in secrets.items() if QUALIFIER not in k}
    prefix = owner + QUALIFIER
    return {k[len(prefix) :]: v for k, v in secrets.items() if k.startswith(prefix)}


def combine(workspaces: list[Workspace], root: Path) -> Workspace:
    """One workspace holding all of ``workspaces`` (the first keeps its names)."""
    primary = workspaces[0]
    actions: dict[str, Action] = {}
    tasks: dict[str, Task] = {}
    triggers: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for ws in workspaces:
        first = ws is primary
        mine = ws.actions if first else qualify_type_task_actions(ws)
        owned = {name: a.owned_by(ws.name, ws.root) for name, a in mine.items()}
        for name, action in owned.items():
            if first:
                actions[name] = action
            actions[f"{ws.name}.{name}"] = action
        for name, value in ws.secrets.items():
            secrets[name if first else f"{ws.name}{QUALIFIER}{name}"] = value
        for name, task in ws.tasks.items():
            key = name if first else f"{ws.name}{QUALIFIER}{name}"
            tasks[key] = _rehome_task(task, ws, first)
        for name, trigger in ws.triggers.items():
            key = name if first else f"{ws.name}{QUALIFIER}{name}"
            triggers[key] = _rehome_trigger(trigger, name, ws, first)
    combined = Workspace(
        name=primary.name,
        root=root,
        actions=actions,
        tasks=tasks,
        triggers=triggers,
        secrets=secrets,
        **{
            event: [_rehome_hook(h, primary, True) for h in getattr(primary, event)]
            for event in HOOK_EVENTS
        },
    )
    combined._later = frozenset(ws.name for ws in workspaces[1:])
    return combined


def webhook_clashes(workspaces: list[Workspace], config: Path) -> list[Problem]:
    """Webhook URL names used by two workspaces (``/hooks/<name>`` is one per server)."""
    owners: dict[str, str] = {}
    problems: list[Problem] = []
    for ws in workspaces:
        for key, trigger in ws.triggers.items():
            if not isinstance(trigger, WebhookTrigger):
                continue
            name = trigger.name or key
            first = owners.setdefault(name, ws.name)
            if first != ws.name:
                problems.append(
                    Problem(
                        f"webhook {name!r} is defined by workspaces {first!r} and {ws.name!r}:"
                        f" /hooks/{name} can only be one of them; rename one (`name:`)",
                        file=str(config),
                        line=1,
                        column=1,
                    )
                )
    return problems


_SECRET_USE = re.compile(r"\bsecrets?\b")


def later_trigger_secrets(workspaces: list[Workspace], config: Path) -> list[Problem]:
    """Triggers render in the combined workspace, which holds the first workspace's
    secrets under their names: a later workspace's trigger reading its own would fail at
    run time, so it is refused here (not supported yet)."""
    problems: list[Problem] = []
    for ws in workspaces[1:]:
        for key, trigger in ws.triggers.items():
            text = json.dumps(trigger.model_dump(mode="json"))
            if _SECRET_USE.search(text):
                problems.append(
                    Problem(
                        f"trigger {key!r} of workspace {ws.name!r} uses secrets: a trigger of"
                        " a workspace after the first is not supported yet with secrets; move"
                        " it to the first workspace",
                        file=str(config),
                        line=1,
                        column=1,
                    )
                )
    return problems


def _local(ws: Workspace, first: bool, action: str) -> str:
    # A local name (dotted or not) wins over a cross-workspace reference; the first
    # workspace's dotted ones are qualified too, as a later workspace may own that name.
    if action in ws.actions and (not first or "." in action):
        return f"{ws.name}.{action}"
    return action


# Every kind of hook a task or a workspace has (each is carried into the combination).
HOOK_EVENTS = ("on_success", "on_error", "on_suspended", "on_cancel")


def _rehome_hook(hook: Hook, ws: Workspace, first: bool) -> Hook:
    return hook.model_copy(update={"action": _local(ws, first, hook.action)})


def _rehome_task(task: Task, ws: Workspace, first: bool) -> Task:
    flow: dict[str, Step] = {}
    for name, step in task.flow.items():
        if step.inline is not None:
            inline = step.inline.owned_by(ws.name, ws.root)
            if not first and inline.task is not None:
                inline = _qualified_task(inline, ws)
            flow[name] = step.model_copy(update={"inline": inline})
        elif step.action is not None:
            flow[name] = step.model_copy(update={"action": _local(ws, first, step.action)})
        else:
            flow[name] = step
    # The combined workspace has one set of workspace-level hooks, the first one's: a
    # later workspace's become the default of each of its tasks (so they fire for its
    # sub-task jobs too, which workspace-level hooks skip).
    hooks = {
        event: [
            _rehome_hook(h, ws, first)
            for h in getattr(task, event) or ([] if first else getattr(ws, event))
        ]
        for event in HOOK_EVENTS
    }
    return task.model_copy(update={"flow": flow, **hooks})


def _qualified_task(action: Action, ws: Workspace) -> Action:
    assert action.task is not None
    if action.task not in ws.tasks:
        return action
    return action.model_copy(update={"task": f"{ws.name}{QUALIFIER}{action.task}"})


def _rehome_trigger(trigger: Any, key: str, ws: Workspace, first: bool) -> Any:
    if first:
        return trigger
    update: dict[str, Any] = {}
    for field_name in ("task", "target_task"):
        value = getattr(trigger, field_name, None)
        if isinstance(value, str) and value in ws.tasks:
            update[field_name] = f"{ws.name}{QUALIFIER}{value}"
    # A webhook keeps its URL name (``/hooks/<name>``); clashes are load errors.
    if getattr(trigger, "type", None) == "webhook" and trigger.name is None:
        update["name"] = key
    return trigger.model_copy(update=update)


def qualify_type_task_actions(ws: Workspace) -> dict[str, Action]:
    """``type: task`` actions of a later workspace name that workspace's tasks."""
    return {
        name: _qualified_task(action, ws) if action.task is not None else action
        for name, action in ws.actions.items()
    }
