"""Load a workspace from a YAML file, a directory of them, or a Strøm workspace folder.

``check_workspace`` collects every problem (errors, warnings, notes) with its location;
``load_workspace`` returns the Workspace or raises WorkspaceError with all the errors.

Stages: find the files, parse each with locations, merge the sections (a name defined
in two files is an error naming both places), reshape what Strøm allows to write in two
ways (inline actions on steps), validate each action/task/trigger with pydantic on its
own (so one bad entry does not hide the others), then check the cross-references and
everything else in ``validate``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from headwater.errors import Problem, Severity, WorkspaceError
from headwater.workspace.models import (
    RECEIVER_TRIGGER_MODELS,
    Action,
    ActionType,
    EventSourceTrigger,
    ReceiverTriggerBase,
    SchedulerTrigger,
    Step,
    Task,
    WebhookTrigger,
    Workspace,
)
from headwater.workspace.multi import (
    action_names,
    combine,
    is_workspaces_config,
    later_trigger_secrets,
    read_workspaces_config,
    webhook_clashes,
)
from headwater.workspace.schema_errors import did_you_mean, problems_from_validation_error
from headwater.workspace.strom_compat import no_effect_problems
from headwater.workspace.strom_files import state_and_artifact_problems
from headwater.workspace.suggestions import (
    EXECUTION_KEYS,
    event_source_script_problem,
    image_as_is_note,
)
from headwater.workspace.tag_checks import tag_problems
from headwater.workspace.templating import TemplateEngine
from headwater.workspace.validate import DefinedNames, semantic_problems
from headwater.workspace.yamlsource import ParsedFile, SourceMap, YamlPath, parse_yaml_file

__all__ = ["Report", "check_workspace", "load_workspace", "workspace_files"]

_MAP_SECTIONS = ("actions", "tasks", "triggers", "secrets")
_LIST_SECTIONS = ("on_success", "on_error", "on_suspended", "on_cancel")
_SECTIONS = (*_MAP_SECTIONS, *_LIST_SECTIONS)
# Strøm sections we do not support: warn and ignore rather than refuse the file.
_UNSUPPORTED_SECTIONS = (
    "connections",
    "connection_types",
    "mcp_servers",
)
_FIXED_TRIGGER_MODELS: dict[str, type[BaseModel]] = {
    "scheduler": SchedulerTrigger,
    "webhook": WebhookTrigger,
    "event_source": EventSourceTrigger,
}


def _trigger_models() -> dict[str, type[BaseModel]]:
    # Read at each load: a receiver registered after import is a valid `type:` too.
    return {**_FIXED_TRIGGER_MODELS, **RECEIVER_TRIGGER_MODELS}


# Action fields a step may carry inline (the ones a Step does not have itself).
_INLINE_KEYS = frozenset(Action.model_fields) - frozenset(Step.model_fields)


@dataclass
class Report:
    """What ``check_workspace`` found; ``workspace`` is None when there are errors."""

    workspace: Workspace | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def valid(self) -> bool:
        return not self.errors


def load_workspace(path: Path) -> Workspace:
    """The workspace at ``path``; raises WorkspaceError listing every error."""
    report = check_workspace(path, environ={}, check_secrets=False)
    if report.workspace is None:
        raise WorkspaceError(report.errors or report.problems)
    return report.workspace


def workspace_files(path: Path) -> tuple[list[Path], str, Path]:
    """(files, workspace name, root) for a file, a directory, or a Strøm folder."""
    if not path.exists():
        raise WorkspaceError([Problem(f"no such file or directory: {path}", file=str(path))])
    if path.is_file():
        return [path], path.stem, path.resolve().parent
    folder = path / ".workflows" if (path / ".workflows").is_dir() else path
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in (".yaml", ".yml") and p.is_file() and not p.name.startswith(".")
    )
    if not files:
        raise WorkspaceError([Problem(f"no *.yaml or *.yml files in {folder}", file=str(path))])
    return files, path.resolve().name, path.resolve()


def check_workspace(
    path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    check_secrets: bool = True,
    name: str | None = None,
    external: Mapping[str, frozenset[str]] | None = None,
    worker_tags: frozenset[str] = frozenset(),
) -> Report:
    """Every problem of the workspace at ``path``, and the workspace when it is valid.

    With ``check_secrets`` the ``secrets:`` templates are rendered against ``environ``
    (default: ``os.environ``) and a failure is a warning: the variable may exist where
    the server runs. ``path`` may be a config listing several workspaces
    (``headwater.workspace.multi``); ``external`` are then the other workspaces' actions.
    ``worker_tags``: the tags of the worker meant to run it (steps needing others warn).
    """
    if is_workspaces_config(path):
        return _check_several(path, environ, check_secrets, worker_tags)
    try:
        files, folder_name, root = workspace_files(path)
    except WorkspaceError as exc:
        return Report(None, list(exc.problems))
    name = name or folder_name
    parsed = [parse_yaml_file(f) for f in files]
    problems = [p for pf in parsed for p in pf.problems]
    raw, source_map = _merge(parsed, problems)
    engine = TemplateEngine()
    workspace, defined = _build(raw, source_map, name, root, problems)
    # A file that does not parse defines nothing: its names would show up as "not
    # defined" everywhere, so cross-references are only checked when every file parsed.
    if not any(pf.data is None and pf.problems for pf in parsed):
        problems.extend(semantic_problems(workspace, source_map, defined, engine, external))
        problems.extend(no_effect_problems(workspace, source_map))
        problems.extend(state_and_artifact_problems(workspace, source_map))
        problems.extend(tag_problems(workspace, source_map, worker_tags))
    if check_secrets and workspace.secrets:
        problems.extend(_secret_warnings(workspace, source_map, environ, engine))
    if check_secrets:
        problems.extend(_missing_clients(workspace, source_map))
    problems.sort(key=lambda p: (p.file or "", p.line or 0, p.column or 0))
    valid = not any(p.severity is Severity.ERROR for p in problems)
    return Report(workspace if valid else None, problems)


def _check_several(
    path: Path,
    environ: Mapping[str, str] | None,
    check_secrets: bool,
    worker_tags: frozenset[str] = frozenset(),
) -> Report:
    sources, problems = read_workspaces_config(path)
    names = {s.name: action_names(s.path) for s in sources}
    loaded: list[Workspace] = []
    for source in sources:
        others = {n: a for n, a in names.items() if n != source.name}
        report = check_workspace(
            source.path,
            environ,
            check_secrets=check_secrets,
            name=source.name,
            external=others,
            worker_tags=worker_tags,
        )
        problems.extend(report.problems)
        if report.workspace is not None:
            loaded.append(report.workspace)
    valid = bool(sources) and len(loaded) == len(sources)
    valid = valid and not any(p.severity is Severity.ERROR for p in problems)
    problems.extend(webhook_clashes(loaded, path))
    problems.extend(later_trigger_secrets(loaded, path))
    if not valid or any(p.severity is Severity.ERROR for p in problems):
        return Report(None, problems)
    return Report(combine(loaded, path.resolve().parent), problems)


# -- merging files -------------------------------------------------------------------------
def _merge(parsed: list[ParsedFile], problems: list[Problem]) -> tuple[dict[str, Any], SourceMap]:
    merged: dict[str, Any] = {s: {} for s in _MAP_SECTIONS} | {s: [] for s in _LIST_SECTIONS}
    source_map = SourceMap()
    for pf in parsed:
        data = pf.data
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(pf.source_map.problem("a workspace file must be a mapping", ()))
            continue
        offsets: dict[str, int] = {}
        owned: set[YamlPath] = set()
        for section, value in data.items():
            if section not in _SECTIONS:
                problems.append(_unknown_section(section, pf.source_map))
                continue
            if value is None:
                continue
            if section in _LIST_SECTIONS:
                if not isinstance(value, list):
                    problems.append(
                        pf.source_map.problem(f"`{section}` must be a list", (section,))
                    )
                    continue
                offsets[section] = len(merged[section])
                merged[section].extend(value)
                continue
            if not isinstance(value, dict):
                problems.append(
                    pf.source_map.problem(f"`{section}` must be a mapping of names", (section,))
                )
                continue
            for entry, body in value.items():
                if entry in merged[section]:
                    first = source_map.key((section, entry))
                    here = pf.source_map.key((section, entry))
                    noun = section.rstrip("s")
                    problems.append(
                        pf.source_map.problem(
                            f"{noun} {entry!r} is defined twice: at {first} and at {here}",
                            (section, entry),
                            at_key=True,
                        )
                    )
                    continue
                merged[section][entry] = body
                owned.add((section, entry))
        _graft(source_map, pf.source_map, owned, offsets)
    return merged, source_map


def _graft(
    target: SourceMap, source: SourceMap, owned: set[YamlPath], offsets: dict[str, int]
) -> None:
    """Copy one file's locations for what it contributed (list items shifted)."""
    for path, loc, is_key in source.entries():
        if len(path) >= 2 and path[0] in _MAP_SECTIONS and path[:2] not in owned:
            continue
        if len(path) >= 2 and path[0] in _LIST_SECTIONS:
            if path[0] not in offsets or not isinstance(path[1], int):
                continue
            path = (path[0], path[1] + offsets[str(path[0])], *path[2:])
        if is_key:
            target.add_key_default(path, loc)
        else:
            target.add_value_default(path, loc)


def _unknown_section(section: str, source_map: SourceMap) -> Problem:
    if section in _UNSUPPORTED_SECTIONS:
        return source_map.problem(
            f"`{section}` (a Strøm feature) is not supported yet by headwater: it is ignored"
            " and has no effect here; remove it",
            (section,),
            severity=Severity.WARNING,
            at_key=True,
        )
    hint = did_you_mean(section, _SECTIONS)
    valid = ", ".join(_SECTIONS)
    return source_map.problem(
        f"unknown top-level key `{section}`{hint}; valid: {valid}", (section,), at_key=True
    )


# -- building models -----------------------------------------------------------------------
def _build(
    raw: dict[str, Any], source_map: SourceMap, name: str, root: Path, problems: list[Problem]
) -> tuple[Workspace, DefinedNames]:
    defined = DefinedNames(
        actions=set(raw["actions"]),
        tasks=set(raw["tasks"]),
        triggers=set(raw["triggers"]),
        steps={
            key: set(body["flow"])
            for key, body in raw["tasks"].items()
            if isinstance(body, dict) and isinstance(body.get("flow"), dict)
        },
    )
    actions: dict[str, Action] = {}
    for key, body in raw["actions"].items():
        if isinstance(body, dict):
            _note(image_as_is_note(body, ("actions", key), f"action {key!r}", source_map), problems)
        built = _validate(
            Action, body, ("actions", key), source_map, problems, partial=defined.partial
        )
        if isinstance(built, Action):
            actions[key] = built
    tasks: dict[str, Task] = {}
    for key, body in raw["tasks"].items():
        shaped = _shape_task(body, ("tasks", key), source_map, problems)
        built = _validate(
            Task,
            shaped,
            ("tasks", key),
            source_map,
            problems,
            original=body,
            partial=defined.partial,
        )
        if isinstance(built, Task):
            tasks[key] = built
    triggers: dict[str, Any] = {}
    for key, body in raw["triggers"].items():
        body = _workflow_target(key, body, tasks, defined, source_map, problems)
        trigger = _build_trigger(key, body, source_map, problems)
        if trigger is not None:
            triggers[key] = trigger
    rest = {s: raw[s] for s in ("secrets", *_LIST_SECTIONS)}
    try:
        top = Workspace.model_validate(rest)
    except ValidationError as exc:
        problems.extend(problems_from_validation_error(exc, Workspace, rest, (), source_map))
        top = Workspace()
    workspace = Workspace(
        name=name,
        root=root,
        actions=actions,
        tasks=tasks,
        triggers=triggers,
        secrets=top.secrets,
        on_success=top.on_success,
        on_error=top.on_error,
        on_suspended=top.on_suspended,
        on_cancel=top.on_cancel,
    )
    return workspace, defined


def _validate(
    model: type[BaseModel],
    body: Any,
    path: YamlPath,
    source_map: SourceMap,
    problems: list[Problem],
    *,
    original: Any = None,
    skip: tuple[tuple[str, str], ...] = (),
    partial: set[YamlPath] | None = None,
) -> BaseModel | None:
    """The model, or None; an invalid entry may come back rebuilt without its bad fields,
    and then its path (or its bad steps' paths) is added to ``partial``."""
    if not isinstance(body, dict):
        noun = {"actions": "an action", "tasks": "a task", "triggers": "a trigger"}[str(path[0])]
        problems.append(source_map.problem(f"{noun} must be a mapping of keys ({path[1]!r})", path))
        return None
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raw = original if original is not None else body
        problems.extend(
            problems_from_validation_error(exc, model, raw, path, source_map, skip=skip)
        )
        locs = [error["loc"] for error in exc.errors(include_url=False)]
    if partial is not None:
        for loc in locs:
            is_step = len(loc) >= 2 and loc[0] == "flow"
            partial.add((*path, "flow", loc[1]) if is_step else path)
    # The entry is invalid (its errors are recorded); a copy without the offending fields
    # still lets the cross-reference checks run on the rest of it.
    salvaged = _without_fields(body, locs)
    if salvaged is None:
        return None
    try:
        return model.model_validate(salvaged)
    except ValidationError:
        return None


def _without_fields(body: dict[str, Any], locs: list[tuple[int | str, ...]]) -> Any:
    out = dict(body)
    flow = dict(out["flow"]) if isinstance(out.get("flow"), dict) else None
    for loc in locs:
        if not loc:
            return None
        if loc[0] == "flow" and flow is not None and len(loc) >= 2:
            step = flow.get(loc[1])
            field = loc[2] if len(loc) >= 3 else None
            if isinstance(step, dict) and isinstance(field, str) and field in step:
                flow[loc[1]] = {k: v for k, v in step.items() if k != field}
            else:
                flow.pop(loc[1], None)
        elif loc[0] in out:
            del out[loc[0]]
        else:
            return None
    if flow is not None and "flow" in out:
        out["flow"] = flow
    return out


def _shape_task(body: Any, path: YamlPath, source_map: SourceMap, problems: list[Problem]) -> Any:
    """Move inline action fields of each step into ``inline``."""
    if not isinstance(body, dict) or not isinstance(body.get("flow"), dict):
        return body
    flow: dict[str, Any] = {}
    for step_name, step in body["flow"].items():
        if not isinstance(step, dict):
            flow[step_name] = step
            continue
        inline_keys = [k for k in step if k in _INLINE_KEYS]
        if not inline_keys:
            flow[step_name] = step
            continue
        step_path = (*path, "flow", step_name)
        if "action" in step:
            listed = ", ".join(f"`{k}`" for k in inline_keys)
            problems.append(
                source_map.problem(
                    f"step {step_name!r} of task {path[1]!r} names `action` and also has inline"
                    f" action fields ({listed}): keep one of the two",
                    (*step_path, inline_keys[0]),
                    at_key=True,
                )
            )
            flow[step_name] = {k: v for k, v in step.items() if k not in _INLINE_KEYS}
            continue
        shaped = {k: v for k, v in step.items() if k not in _INLINE_KEYS}
        shaped["inline"] = {k: step[k] for k in inline_keys}
        entity = f"step {step_name!r} of task {path[1]!r}"
        _note(image_as_is_note(step, step_path, entity, source_map), problems)
        flow[step_name] = shaped
    return {**body, "flow": flow}


def _note(problem: Problem | None, problems: list[Problem]) -> None:
    if problem is not None:
        problems.append(problem)


def _workflow_target(
    key: str,
    body: Any,
    tasks: dict[str, Task],
    defined: DefinedNames,
    source_map: SourceMap,
    problems: list[Problem],
) -> Any:
    """A receiver trigger with ``target_workflow``: the task ``{trigger}`` whose one step
    runs the workflow with the message's payload and metadata becomes its target (each
    job is one workflow run, the message's dedup key its workflow id)."""
    if not isinstance(body, dict) or not body.get("target_workflow"):
        return body
    path: YamlPath = ("triggers", key)
    if body.get("type") not in _receiver_types():
        problems.append(
            source_map.problem(
                f"trigger {key!r}: `target_workflow` is for broker receivers", (*path, "type")
            )
        )
        return {k: v for k, v in body.items() if k != "target_workflow"}
    if body.get("target_task"):
        problems.append(
            source_map.problem(
                f"trigger {key!r}: give `target_task` or `target_workflow`, not both",
                (*path, "target_workflow"),
                at_key=True,
            )
        )
        return body
    if key in tasks or key in defined.tasks:
        problems.append(
            source_map.problem(
                f"trigger {key!r}: `target_workflow` runs the workflow as the task {key!r},"
                " but a task of that name exists: rename the trigger or the task",
                (*path, "target_workflow"),
                at_key=True,
            )
        )
        return body
    ref = str(body["target_workflow"])
    action = Action(type=ActionType.WORKFLOW, workflow=ref)
    step_input = {"payload": "{{ input.payload }}", "metadata": "{{ input.metadata }}"}
    tasks[key] = Task(
        description=f"{body.get('type')} → workflow {ref}",
        flow={"workflow": Step(inline=action, input=step_input)},
    )
    defined.tasks.add(key)
    return {**body, "target_task": key}


def _receiver_types() -> frozenset[str]:
    from headwater.workspace.receiver_triggers import RECEIVERS

    return frozenset(RECEIVERS)


def _build_trigger(
    key: str, body: Any, source_map: SourceMap, problems: list[Problem]
) -> BaseModel | None:
    path: YamlPath = ("triggers", key)
    if not isinstance(body, dict):
        return _validate(SchedulerTrigger, body, path, source_map, problems)
    kind = body.get("type")
    models = _trigger_models()
    if kind is None:
        valid = ", ".join(models)
        problems.append(
            source_map.problem(
                f"trigger {key!r}: missing required key `type` ({valid})", path, at_key=True
            )
        )
        return None
    model = models.get(str(kind))
    if model is None:
        valid = ", ".join(models)
        hint = did_you_mean(str(kind), models)
        problems.append(
            source_map.problem(
                f"trigger {key!r}: unknown type {kind!r}; valid: {valid}{hint}", (*path, "type")
            )
        )
        return None
    skip: tuple[tuple[str, str], ...] = ()
    if model is EventSourceTrigger:
        inline = [k for k in body if k in EXECUTION_KEYS]
        if inline:
            problems.append(event_source_script_problem(key, body, inline, source_map))
            body = {k: v for k, v in body.items() if k not in EXECUTION_KEYS}
            skip = (("missing", "target_task"),)  # the suggestion above covers it
    return _validate(model, body, path, source_map, problems, skip=skip)


def _missing_clients(workspace: Workspace, source_map: SourceMap) -> list[Problem]:
    # Like the secrets, this checks the environment `validate` runs in: the server
    # (check_secrets=False) starts the others and fails this trigger alone, without retrying.
    problems: list[Problem] = []
    for key, trigger in workspace.triggers.items():
        if isinstance(trigger, ReceiverTriggerBase) and trigger.enabled:
            missing = type(trigger).missing_client()
            if missing is not None:
                problems.append(source_map.problem(missing, ("triggers", key, "type")))
    return problems


def _secret_warnings(
    workspace: Workspace,
    source_map: SourceMap,
    environ: Mapping[str, str] | None,
    engine: TemplateEngine,
) -> list[Problem]:
    from headwater.workspace.secrets import check_secrets

    failures = check_secrets(workspace, os.environ if environ is None else environ, engine)
    return [
        source_map.problem(
            f"{why} (it must be set where the server and workers run)",
            ("secrets", *name.split(".")),
            severity=Severity.WARNING,
        )
        for name, why in failures.items()
    ]
