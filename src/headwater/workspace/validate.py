"""Checks across the workspace: references, cycles, action rules, templates, schedules.

Runs on the models that validated (pydantic already checked keys and types) and reports
through the SourceMap, so each problem points at the value it is about. Names of entries
that failed their own validation still count as defined, so one bad action does not
also produce "action is not defined" errors at every step that uses it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from headwater.errors import Problem, Severity
from headwater.workspace.cron import cron_problem, timezone_problem
from headwater.workspace.flow import flow_templates
from headwater.workspace.hooks import is_approval_step
from headwater.workspace.models import (
    Action,
    ActionType,
    EventSourceTrigger,
    Hook,
    ReceiverTriggerBase,
    RunnerKind,
    SchedulerTrigger,
    Step,
    Task,
    WebhookMode,
    WebhookTrigger,
    Workspace,
)
from headwater.workspace.pod_manifest import manifest_problems
from headwater.workspace.quantities import resource_problems
from headwater.workspace.schema_errors import describe, did_you_mean, field_label
from headwater.workspace.template_ast import shell_warning
from headwater.workspace.templating import RESERVED_NAMES, TemplateEngine
from headwater.workspace.workflow_refs import workflow_problem
from headwater.workspace.yamlsource import SourceMap, YamlPath

__all__ = ["DefinedNames", "semantic_problems"]

_FUNCTION_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_WEBHOOK_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# user:password@ (or :password@) in a URL whose password is not a template
_CLEAR_PASSWORD = re.compile(r"://[^/@{]*:(?!\{\{)[^/@]+@")
# An Azure connection string's key written out (not a {{ secret.x }} template).
_CLEAR_SAS_KEY = re.compile(r"SharedAccessKey=(?!\s*\{\{)[^;]+", re.IGNORECASE)
_IMAGE_ONLY_KEYS = ("cmd", "entrypoint", "command")
_SCRIPT_KEYS = ("script", "source", "dependencies", "interpreter", "args")
_NOT_RUNNABLE = ("script", "source", "args", "image", *_IMAGE_ONLY_KEYS, "manifest")
_FORBIDDEN: dict[ActionType, tuple[str, ...]] = {
    ActionType.TASK: (*_NOT_RUNNABLE, "function", "message", "workflow"),
    ActionType.FUNCTION: (*_NOT_RUNNABLE, "task", "message", "workflow"),
    ActionType.WORKFLOW: (*_NOT_RUNNABLE, "task", "message"),
    ActionType.DOCKER: (*_SCRIPT_KEYS, "task", "function", "message", "workflow"),
    ActionType.POD: (*_SCRIPT_KEYS, "task", "function", "message", "workflow"),
    ActionType.SCRIPT: (*_IMAGE_ONLY_KEYS, "task", "function", "message", "workflow"),
    # Strøm: an approval gate has a message (and input, timeout) and nothing that runs.
    ActionType.APPROVAL: (
        *_NOT_RUNNABLE,
        *("dependencies", "interpreter", "resources", "task", "function", "workflow"),
        *("env", "tags", "workdir", "retry"),
    ),
}
_CONTEXT_NAMES = frozenset(
    {"input", "secret", "secrets", "job", "steps", "env", "each", "state", "global_state"}
)


@dataclass(frozen=True)
class DefinedNames:
    """Every name written in the workspace, valid or not."""

    actions: set[str] = field(default_factory=set)
    tasks: set[str] = field(default_factory=set)
    triggers: set[str] = field(default_factory=set)
    steps: dict[str, set[str]] = field(default_factory=dict)  # task -> its step names
    # Actions and steps that had errors and were rebuilt without the bad fields: the
    # action rules are not checked on them (a typo in `script` should not also say
    # "needs a script"); a step's references and input templates still are.
    partial: set[YamlPath] = field(default_factory=set)


@dataclass(frozen=True)
class _StepScope:
    """What a step's templates may read: the task's steps and this step's ancestors."""

    task: str
    step: str
    aliases: Mapping[str, str]  # template name (incl. say_hello for say-hello) -> step
    upstream: frozenset[str]


def semantic_problems(
    ws: Workspace,
    source_map: SourceMap,
    defined: DefinedNames,
    engine: TemplateEngine,
    external: Mapping[str, frozenset[str]] | None = None,
) -> list[Problem]:
    """``external``: the action names of the other workspaces served with this one."""
    checker = _Checker(ws, source_map, defined, engine, external)
    try:
        checker.run()
    except Exception as exc:  # never a traceback from validate: report it as a problem
        first = next(iter(source_map.entries()), None)
        file = first[1].file if first else str(ws.root)
        checker.problems.append(
            Problem(
                message=f"the workspace could not be fully checked: {type(exc).__name__}: {exc}",
                file=file,
                line=1,
                column=1,
            )
        )
    return checker.problems


class _Checker:
    def __init__(
        self,
        ws: Workspace,
        source_map: SourceMap,
        defined: DefinedNames,
        engine: TemplateEngine,
        external: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.ws = ws
        self.external = external
        self.map = source_map
        self.defined = defined
        self.engine = engine
        self.problems: list[Problem] = []
        self.secret_uses: list[tuple[YamlPath, str]] = []

    def error(self, path: YamlPath, message: str, *, at_key: bool = False) -> None:
        entity, _ = describe(path)
        self.problems.append(self.map.problem(f"{entity}: {message}", path, at_key=at_key))

    def warn(self, path: YamlPath, message: str, severity: Severity = Severity.WARNING) -> None:
        entity, _ = describe(path)
        self.problems.append(self.map.problem(f"{entity}: {message}", path, severity=severity))

    def run(self) -> None:
        for name, action in self.ws.actions.items():
            self.action(action, ("actions", name))
        for name, task in self.ws.tasks.items():
            self.task(name, task)
        self.task_call_cycles()
        for name, trigger in self.ws.triggers.items():
            self.trigger(name, trigger)
        self.webhook_names()
        self.hooks(self.ws.on_success, ("on_success",))
        self.hooks(self.ws.on_error, ("on_error",))
        self.hooks(self.ws.on_suspended, ("on_suspended",))
        self.hooks(self.ws.on_cancel, ("on_cancel",))
        self.undefined_secrets()

    # -- actions ---------------------------------------------------------------------------
    def action(self, action: Action, path: YamlPath) -> None:
        if path in self.defined.partial:
            return
        kind = action.type
        for key in _FORBIDDEN[kind]:
            if _is_set(action, key):
                self.error((*path, key), f"a `type: {kind.value}` action cannot have `{key}`")
        if kind is ActionType.SCRIPT:
            self.script_action(action, path)
        elif kind in (ActionType.DOCKER, ActionType.POD) and not action.image:
            self.error((*path, "type"), f"a `type: {kind.value}` action needs `image`")
        elif kind is ActionType.TASK:
            if not action.task:
                self.error((*path, "type"), "a `type: task` action needs `task: NAME`")
            elif action.task not in self.defined.tasks:
                hint = did_you_mean(action.task, self.defined.tasks)
                self.error((*path, "task"), f"task {action.task!r} is not defined{hint}")
        elif kind is ActionType.FUNCTION and not _FUNCTION_REF.match(action.function or ""):
            got = f", got {action.function!r}" if action.function else ""
            self.error(
                (*path, "function" if action.function else "type"),
                f'a `type: function` action needs `function: "module:callable"`{got}',
            )
        elif kind is ActionType.WORKFLOW:
            self.workflow_ref(action.workflow, path, "workflow")
        if action.manifest is not None and action.effective_runner is not RunnerKind.POD:
            self.warn(
                (*path, "manifest"),
                "`manifest` is only used by pod actions (`type: pod` or `runner: pod`); ignored",
            )
        for key, value in action.env.items():
            self.template(value, (*path, "env", key))
        for field_name, spec in action.input.items():
            if isinstance(spec.default, str):
                self.template(spec.default, (*path, "input", field_name, "default"))
        if action.message is not None:
            self.template(action.message, (*path, "message"))
        for index, arg in enumerate(action.args):
            self.template(arg, (*path, "args", index))
        if action.script is not None:
            self.template(action.script, (*path, "script"))
            if action.language.is_shell and self.engine.syntax_error(action.script) is None:
                self.unquoted_shell_values(action.script, (*path, "script"))
        self.image_fields(action, path)

    def unquoted_shell_values(self, script: str, path: YamlPath) -> None:
        """Event data pasted into a shell script as it is runs as shell code."""
        warning = shell_warning(self.engine.unquoted_values(script))
        if warning is not None:
            self.warn(path, warning)

    def image_fields(self, action: Action, path: YamlPath) -> None:
        """The docker and pod runners' fields: command, resources, manifest."""
        runner = action.effective_runner
        if runner is RunnerKind.LOCAL:
            if action.resources and action.type is ActionType.SCRIPT:
                self.warn(
                    (*path, "resources"),
                    "`resources` is only used by the docker and pod runners; ignored",
                )
            return
        if action.cmd is not None and action.command is not None:
            self.error(
                (*path, "command"),
                "`cmd` and `command` are exclusive: `cmd` is a shell command (or the"
                " entrypoint's arguments), `command` the list of arguments; keep one",
            )
        if action.type is ActionType.SCRIPT:
            if not action.image and (action.script is not None or action.source is not None):
                self.warn(
                    (*path, "runner"),
                    f"a script run by `runner: {runner.value}` needs an `image` to run in"
                    " (e.g. `image: python:3.12-slim`); without one the step fails",
                )
            if action.dependencies:
                self.error(
                    (*path, "dependencies"),
                    "`dependencies` are installed by the local runner only; in a container,"
                    " build them into the image",
                )
        for key, problem in resource_problems(action.resources or {}):
            self.error((*path, "resources", key), problem)
        if action.manifest is not None and runner is RunnerKind.POD:
            for sub_path, problem in manifest_problems(action.manifest):
                self.error((*path, "manifest", *sub_path), f"`manifest`: {problem}")
        for key in ("image", "cmd", "entrypoint", "command", "manifest"):
            value = getattr(action, key)
            if value is not None:
                self.template(value, (*path, key))

    def script_action(self, action: Action, path: YamlPath) -> None:
        if action.script is not None and action.source is not None:
            self.error((*path, "source"), "`script` and `source` are exclusive: keep one")
        if action.script is None and action.source is None:
            hint = ""
            if action.runner is not RunnerKind.LOCAL and not action.image:
                hint = f" (or an `image` to run as-is with `runner: {action.runner.value}`)"
            self.error((*path, "type"), f"a `type: script` action needs `script` or `source`{hint}")
        if action.source is not None:
            target = self.ws.root / action.source
            if not target.is_file():
                self.error(
                    (*path, "source"),
                    f"source file {action.source!r} does not exist (looked for {target})",
                )
        if action.dependencies and action.language.is_shell:
            self.error(
                (*path, "dependencies"),
                "`dependencies` need a `language` other than shell (e.g. `language: python`)",
            )
        if action.image and action.runner is RunnerKind.LOCAL:
            self.error(
                (*path, "image"),
                "`image` needs `runner: docker` or `runner: pod` (or `type: docker` to run the"
                " image as-is)",
            )

    # -- tasks -----------------------------------------------------------------------------
    def task(self, name: str, task: Task) -> None:
        path: YamlPath = ("tasks", name)
        if not task.flow:
            self.error((*path, "flow"), "`flow` has no steps")
        for field_name, spec in task.input.items():
            if isinstance(spec.default, str):
                self.template(spec.default, (*path, "input", field_name, "default"))
        aliases = _step_aliases(task.flow)
        ancestors = _ancestors(task.flow)
        for step_name, step in task.flow.items():
            scope = _StepScope(name, step_name, aliases, ancestors.get(step_name, frozenset()))
            self.step(step, (*path, "flow", step_name), task, scope)
        self.one_workflow_step(task, path)
        for cycle in _cycles({s: st.depends_on for s, st in task.flow.items()}):
            first = cycle[0]
            self.error(
                (*path, "flow", first, "depends_on"),
                f"steps depend on each other in a cycle: {' -> '.join(cycle)}",
            )
        self.flow_keys(task, path)
        self.hooks(task.on_success, (*path, "on_success"))
        self.hooks(task.on_error, (*path, "on_error"))
        self.hooks(task.on_suspended, (*path, "on_suspended"))
        self.hooks(task.on_cancel, (*path, "on_cancel"))

    def step(self, step: Step, path: YamlPath, task: Task, scope: _StepScope) -> None:
        if step.inline is not None:
            self.action(step.inline, path)
        elif step.action is None:
            self.error(
                path,
                "no `action`: name an action (`action: NAME`) or define one inline"
                " (`type: script`, `script: ...`)",
                at_key=True,
            )
        elif step.action not in self.defined.actions:
            self.missing_action(step.action, (*path, "action"))
        step_names = self.defined.steps.get(scope.task) or set(task.flow)
        for i, dep in enumerate(step.depends_on):
            if dep == scope.step:
                self.error((*path, "depends_on", i), "a step cannot depend on itself")
            elif dep not in step_names:
                hint = did_you_mean(dep, step_names)
                self.error(
                    (*path, "depends_on", i),
                    f"depends_on {dep!r} is not a step of task {scope.task!r}{hint}",
                )
        for alias in {scope.step, scope.step.replace("-", "_")} & RESERVED_NAMES:
            self.warn(
                path,
                f"step name {scope.step!r} hides the template variable `{alias}`; later steps"
                f" read its output as `steps.{scope.step}.output`",
            )
        self.template(step.input, (*path, "input"), scope)
        if step.when is not None:
            self.template(step.when, (*path, "when"), scope)
        self.loop(step, path, scope)

    def missing_action(self, name: str, path: YamlPath) -> None:
        """A name that is no local action: maybe another workspace's (``ws.action``)."""
        owner, dot, action = name.partition(".")
        if not dot:
            hint = did_you_mean(name, self.defined.actions)
            self.error(path, f"action {name!r} is not defined{hint}")
            return
        if self.external is None:
            self.error(
                path,
                f"action {name!r} is not defined here, and workspace {owner!r} is not loaded:"
                " a reference to another workspace's action needs both workspaces listed in"
                " a config with `workspaces:` (give its path instead of the folder)",
            )
            return
        actions = self.external.get(owner)
        if actions is None:
            loaded = ", ".join(sorted(self.external)) or "none"
            self.error(
                path,
                f"action {name!r}: workspace {owner!r} is not loaded (other workspaces:"
                f" {loaded}){did_you_mean(owner, self.external)}",
            )
        elif action not in actions:
            self.error(
                path,
                f"action {name!r}: workspace {owner!r} has no action {action!r}"
                f"{did_you_mean(action, actions)}",
            )

    def loop(self, step: Step, path: YamlPath, scope: _StepScope) -> None:
        """Strøm's ``for_each`` keys (run by headwater.engine.fanout)."""
        if "[" in scope.step or "]" in scope.step:
            self.error(
                path,
                f"step name {scope.step!r} must not contain `[` or `]` (loop instances are"
                " named `step[0]`, `step[1]`, …)",
                at_key=True,
            )
        if step.for_each is not None:
            self.template(step.for_each, (*path, "for_each"), scope)
            if is_approval_step(self.ws, step):
                self.error((*path, "for_each"), "an approval step cannot loop (`for_each`)")
        elif step.sequential or step.max_parallel is not None:
            key = "sequential" if step.sequential else "max_parallel"
            self.warn((*path, key), f"`{key}` has no effect without `for_each`; remove it")
        if step.sequential and step.max_parallel is not None:
            self.warn(
                (*path, "max_parallel"),
                "`max_parallel` has no effect with `sequential: true` (one at a time)",
            )

    def task_call_cycles(self) -> None:
        """A task that reaches itself through ``type: task`` actions would never end."""
        calls: dict[str, list[str]] = {}
        for name, task in self.ws.tasks.items():
            called: list[str] = []
            for step in task.flow.items():
                action = step[1].inline or self.ws.actions.get(step[1].action or "")
                if action and action.type is ActionType.TASK and action.task in self.ws.tasks:
                    called.append(action.task)
            calls[name] = called
        for cycle in _cycles(calls):
            self.error(
                ("tasks", cycle[0]),
                f"runs itself through `type: task` actions: {' -> '.join(cycle)}",
                at_key=True,
            )

    def hooks(self, hooks: list[Hook], path: YamlPath) -> None:
        for i, hook in enumerate(hooks):
            if hook.action not in self.defined.actions:
                hint = did_you_mean(hook.action, self.defined.actions)
                self.error((*path, i, "action"), f"action {hook.action!r} is not defined{hint}")
            self.template(hook.input, (*path, i, "input"))

    # -- triggers --------------------------------------------------------------------------
    def flow_keys(self, task: Task, path: YamlPath) -> None:
        """``concurrency.key``, ``rate_limit.key`` and ``priority`` render against the
        job's input only, when the job is created."""
        if task.concurrency is not None and task.concurrency.key is not None:
            self.flow_template(task.concurrency.key, (*path, "concurrency", "key"))
        if task.rate_limit is not None and task.rate_limit.key is not None:
            self.flow_template(task.rate_limit.key, (*path, "rate_limit", "key"))
        if isinstance(task.priority, str):
            self.flow_template(task.priority, (*path, "priority"))

    def flow_template(self, text: str, path: YamlPath) -> None:
        label = field_label(describe(path)[1])
        problem = self.engine.syntax_error(text)
        if problem is not None:
            self.error(path, f"`{label}` is not a valid template: {problem}")
            return
        for name in sorted(self.engine.free_names(text) - {"input"}):
            self.error(
                path,
                f"`{label}` reads `{name}`: flow-control keys and priorities render when"
                " the job is created, with `input` only (e.g. `{{ input.customer_id }}`)",
            )

    def trigger(self, name: str, trigger: Any) -> None:
        path: YamlPath = ("triggers", name)
        self.flow_control(trigger, path)
        if isinstance(getattr(trigger, "priority", None), str):
            self.flow_template(trigger.priority, (*path, "priority"))
        if isinstance(trigger, ReceiverTriggerBase):
            self.receiver_trigger(trigger, path)
            return
        self.task_ref(trigger.task, (*path, "task"), "task")
        self.template(trigger.input, (*path, "input"))
        if isinstance(trigger, SchedulerTrigger):
            problem = cron_problem(trigger.cron)
            if problem:
                self.error((*path, "cron"), problem)
            problem = timezone_problem(trigger.timezone)
            if problem:
                self.error((*path, "timezone"), problem)
        elif isinstance(trigger, EventSourceTrigger):
            self.task_ref(trigger.target_task, (*path, "target_task"), "target_task")
            if trigger.target_task == trigger.task:
                self.error(
                    (*path, "target_task"),
                    f"`target_task` is the consumer task {trigger.task!r} itself: every event"
                    " would start another consumer. Point `target_task` at the task that"
                    " handles one event",
                )
            for key, value in trigger.env.items():
                self.template(value, (*path, "env", key))
            if trigger.dedup_key is not None:
                self.template(trigger.dedup_key, (*path, "dedup_key"))
        elif isinstance(trigger, WebhookTrigger) and trigger.secret is not None:
            self.template(trigger.secret, (*path, "secret"))

    def one_workflow_step(self, task: Task, path: YamlPath) -> None:
        """A workflow's recorded calls are the job's: two workflow steps of one task would
        replay each other's records."""
        found = []
        for step_name, step in task.flow.items():
            action = step.inline or self.ws.actions.get(step.action or "")
            if action is not None and action.type is ActionType.WORKFLOW:
                found.append(step_name)
        if len(found) > 1:
            self.error(
                (*path, "flow", found[1]),
                f"a task runs at most one `type: workflow` step (also {found[0]!r}): a"
                " workflow's recorded calls belong to its job; make a task per workflow and"
                " call it with a `type: task` step",
            )

    def workflow_ref(
        self, ref: str | None, path: YamlPath, key: str, kwargs: tuple[str, ...] = ()
    ) -> None:
        """A ``@headwater.workflow`` named by ``module:function``: importable, a workflow,
        taking ``kwargs``."""
        if not _FUNCTION_REF.match(ref or ""):
            got = f", got {ref!r}" if ref else ""
            self.error(
                (*path, key if ref else "type"),
                f'`{key}` needs a Python workflow as "module:function"{got}',
            )
            return
        assert ref is not None
        problem = workflow_problem(ref, self.ws.root, kwargs)
        if problem is not None:
            self.error((*path, key), problem)

    def receiver_trigger(self, trigger: ReceiverTriggerBase, path: YamlPath) -> None:
        """A broker receiver: its target task, templates, and no password in clear."""
        if trigger.target_workflow is not None:
            self.workflow_ref(
                trigger.target_workflow, path, "target_workflow", ("payload", "metadata")
            )
        self.task_ref(trigger.target_task, (*path, "target_task"), "target_task")
        self.template(trigger.input, (*path, "input"))
        if trigger.dedup_key is not None:
            self.template(trigger.dedup_key, (*path, "dedup_key"))
        for name, value in trigger.templated().items():
            self.template(value, (*path, name))
            if (
                _CLEAR_PASSWORD.search(value)
                or _CLEAR_SAS_KEY.search(value)
                or (("password" in name or "secret" in name) and "{{" not in value)
            ):
                self.warn(
                    (*path, name),
                    f"`{name}` holds a password in clear; write it as `{{{{ secret.name }}}}`"
                    " and define the secret under `secrets:`",
                )

    def flow_control(self, trigger: Any, path: YamlPath) -> None:
        """``debounce`` / ``batch`` (their values were checked by the models)."""
        for field_name, key in flow_templates(trigger):
            key_path: YamlPath = (*path, field_name, "key")
            self.template(key, key_path)
            if self.engine.syntax_error(key) is None:
                other = sorted(self.engine.free_names(key) - {"input"})
                if other:
                    self.error(key_path, f"`key` may only read `input`, not {', '.join(other)}")
        gathers = getattr(trigger, "debounce", None) or getattr(trigger, "batch", None)
        if getattr(trigger, "debounce", None) and getattr(trigger, "batch", None):
            self.error((*path, "batch"), "a trigger has `debounce` or `batch`, not both")
        if isinstance(trigger, WebhookTrigger) and gathers and trigger.mode is WebhookMode.SYNC:
            self.error(
                (*path, "mode"),
                "`mode: sync` waits for the event's job, but `debounce`/`batch` makes that"
                " job later: use `mode: async`",
            )

    def task_ref(self, task: str, path: YamlPath, key: str) -> None:
        if task not in self.defined.tasks:
            hint = did_you_mean(task, self.defined.tasks)
            self.error(path, f"{key} {task!r} is not defined{hint}")

    def webhook_names(self) -> None:
        seen: dict[str, str] = {}
        for key, trigger in self.ws.triggers.items():
            if not isinstance(trigger, WebhookTrigger):
                continue
            name = trigger.name or key
            path: YamlPath = ("triggers", key, "name") if trigger.name else ("triggers", key)
            if not _WEBHOOK_NAME.match(name):
                self.error(path, f"webhook name {name!r} may only hold letters, digits, - and _")
            elif name in seen:
                self.error(path, f"webhook name {name!r} is also used by trigger {seen[name]!r}")
            else:
                seen[name] = key

    # -- templates -------------------------------------------------------------------------
    def template(self, value: Any, path: YamlPath, scope: _StepScope | None = None) -> None:
        for sub_path, text in _strings(value, path):
            label = field_label(describe(sub_path)[1])
            try:
                self.one_template(text, sub_path, label, scope)
            except Exception as exc:  # a template must never crash validate
                self.error(sub_path, f"`{label}` could not be checked: {type(exc).__name__}: {exc}")

    def one_template(self, text: str, path: YamlPath, label: str, scope: _StepScope | None) -> None:
        problem = self.engine.syntax_error(text)
        if problem is not None:
            self.error(path, f"`{label}` is not a valid template: {problem}")
            return
        for dotted in self.engine.referenced_names(text):
            parts = dotted.split(".")
            if len(parts) >= 2:
                self.secret_uses.append((path, ".".join(parts[1:])))
        if scope is not None:
            self.step_references(text, path, label, scope)

    def step_references(self, text: str, path: YamlPath, label: str, scope: _StepScope) -> None:
        read: set[str] = set()
        for name in self.engine.free_names(text):
            if name in scope.aliases:
                read.add(scope.aliases[name])
            elif name not in _CONTEXT_NAMES:
                self.warn(
                    path,
                    f"`{label}` reads `{name}`, which is not a step of task {scope.task!r}"
                    f" nor a template variable (input, secret, job, steps)"
                    f"{did_you_mean(name, scope.aliases)}",
                )
        for dotted in self.engine.referenced_names(text, roots=("steps",)):
            parts = dotted.split(".")
            if len(parts) >= 2 and parts[1] in scope.aliases.values():
                read.add(parts[1])
        for step in sorted(read - scope.upstream - {scope.step}):
            self.warn(
                path,
                f"`{label}` reads step {step!r}, which is not among its depends_on; it may not"
                f" have run yet (add `depends_on: [{step}]`)",
            )

    def undefined_secrets(self) -> None:
        defined = self.ws.secrets
        for path, name in self.secret_uses:
            # `secret.db.password` reads the nested secret `db.password` (or a part of it).
            if any(
                key == name or key.startswith(f"{name}.") or name.startswith(f"{key}.")
                for key in defined
            ):
                continue
            label = field_label(describe(path)[1])
            self.warn(
                path,
                f"`{label}` uses secret `{name}`, which is not defined under `secrets:`"
                f"{did_you_mean(name, defined)}; it must be provided at run time",
            )


def _is_set(action: Action, key: str) -> bool:
    value = getattr(action, key)
    return bool(value) if isinstance(value, list | dict) else value is not None


def _strings(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*path, i))


def _step_aliases(flow: Mapping[str, Step]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for name in flow:
        for alias in (name, name.replace("-", "_")):
            if alias not in RESERVED_NAMES:
                aliases.setdefault(alias, name)
    return aliases


def _ancestors(flow: Mapping[str, Step]) -> dict[str, frozenset[str]]:
    """Every step each step transitively depends on (cycles tolerated)."""
    result: dict[str, frozenset[str]] = {}
    for start in flow:
        seen: set[str] = set()
        todo = list(flow[start].depends_on)
        while todo:
            dep = todo.pop()
            if dep in seen or dep not in flow:
                continue
            seen.add(dep)
            todo.extend(flow[dep].depends_on)
        result[start] = frozenset(seen)
    return result


def _cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Each distinct cycle once, as ``[a, b, a]`` (a -> b -> a), starting at its first node."""
    found: list[list[str]] = []
    seen_cycles: set[frozenset[str]] = set()
    done: set[str] = set()

    def visit(node: str, stack: list[str], on_stack: set[str]) -> None:
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph or nxt == node:  # self-dependency is reported on its own
                continue
            if nxt in on_stack:
                cycle = [*stack[stack.index(nxt) :], nxt]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    found.append(cycle)
            elif nxt not in done:
                visit(nxt, stack, on_stack)
        stack.pop()
        on_stack.discard(node)
        done.add(node)

    for node in graph:
        if node not in done:
            visit(node, [], set())
    return found
