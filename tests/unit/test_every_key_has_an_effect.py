"""The rule: every key headwater accepts has an effect, or `validate` says it has none.

Every field of the workspace models (and of the receiver trigger models) must be listed
here: as acted on (with the module that reads it, checked to mention it), as
documentation only (shown by the API or the CLI, like Strøm's UI shows it), or as
accepted with a `validate` warning (checked to be given). A new field that is in none
of them fails this test: give it an effect, or a warning, before it is accepted.
Strøm keys that headwater does not implement are refused with "not supported yet".
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

import headwater
from headwater.workspace.loader import check_workspace
from headwater.workspace.models import RECEIVER_TRIGGER_MODELS, Workspace
from headwater.workspace.receiver_triggers import ReceiverTriggerBase

SRC = Path(headwater.__file__).parent

# Model.field -> the module (under src/headwater) where it takes effect.
ACTED_ON: dict[str, str] = {
    "Workspace.name": "dispatch/dispatcher.py",
    "Workspace.root": "engine/steps.py",
    "Workspace.actions": "workspace/models.py",
    "Workspace.tasks": "workspace/hooks.py",
    "Workspace.triggers": "triggers/scheduler.py",
    "Workspace.secrets": "workspace/secrets.py",
    "Workspace.on_success": "dispatch/hooks.py",
    "Workspace.on_error": "dispatch/hooks.py",
    "Workspace.on_suspended": "dispatch/hooks.py",
    "Workspace.on_cancel": "dispatch/hooks.py",
    "Hook.action": "dispatch/hooks.py",
    "Hook.input": "dispatch/hooks.py",
    "Task.input": "dispatch/dispatcher.py",
    "Task.flow": "engine/executor.py",
    "Task.timeout": "engine/executor.py",
    "Task.on_success": "dispatch/hooks.py",
    "Task.on_error": "dispatch/hooks.py",
    "Task.on_suspended": "dispatch/hooks.py",
    "Task.on_cancel": "dispatch/hooks.py",
    "Task.retry": "dispatch/task_retry.py",
    "Task.folder": "server/routes_tasks.py",
    "Step.action": "workspace/models.py",
    "Step.depends_on": "engine/executor.py",
    "Step.input": "engine/steps.py",
    "Step.continue_on_failure": "engine/executor.py",
    "Step.timeout": "engine/steps.py",
    "Step.retry": "engine/steps.py",
    "Step.when": "engine/steps.py",
    "Step.for_each": "engine/executor.py",
    "Step.sequential": "engine/fanout.py",
    "Step.max_parallel": "engine/fanout.py",
    "Step.inline": "workspace/models.py",
    "Step.tags": "workspace/models.py",
    "Action.type": "engine/steps.py",
    # A workflow step runs as a function step: the model copies it into ``function``.
    "Action.workflow": "workspace/models.py",
    "Action.script": "engine/steps.py",
    "Action.source": "engine/steps.py",
    "Action.language": "engine/steps.py",
    "Action.interpreter": "engine/steps.py",
    "Action.dependencies": "engine/steps.py",
    "Action.args": "engine/steps.py",
    "SchedulerTrigger.force_refresh": "triggers/scheduler.py",
    "WebhookTrigger.force_refresh": "server/routes_webhooks.py",
    "WebhookTrigger.debounce": "dispatch/gather.py",
    "WebhookTrigger.batch": "dispatch/gather.py",
    "EventSourceTrigger.debounce": "dispatch/gather.py",
    "EventSourceTrigger.batch": "dispatch/gather.py",
    "Debounce.key": "dispatch/gather.py",
    "Debounce.period": "dispatch/gather.py",
    "Debounce.max_wait": "dispatch/gather.py",
    "Batch.key": "dispatch/gather.py",
    "Batch.size": "dispatch/gather.py",
    "Batch.window": "dispatch/gather.py",
    "Action.runner": "workspace/models.py",
    "Action.image": "engine/steps.py",
    "Action.cmd": "engine/steps.py",
    "Action.entrypoint": "engine/steps.py",
    "Action.command": "engine/steps.py",
    "Action.manifest": "engine/steps.py",
    "Action.resources": "engine/steps.py",
    "Action.task": "engine/steps.py",
    "Action.function": "engine/steps.py",
    "Action.message": "engine/approval.py",
    "Action.env": "engine/steps.py",
    "Action.timeout": "engine/steps.py",
    "Action.tags": "workspace/models.py",
    "Action.workdir": "engine/steps.py",
    "Action.input": "engine/action_input.py",
    "Action.retry": "engine/steps.py",
    "RetryPolicy.count": "engine/steps.py",
    "RetryPolicy.backoff": "workspace/models.py",
    "RetryPolicy.max_backoff": "workspace/models.py",
    "RetryPolicy.strategy": "workspace/models.py",
    "RetryPolicy.jitter": "workspace/models.py",
    "InputField.type": "workspace/inputs.py",
    "InputField.required": "workspace/inputs.py",
    "InputField.default": "workspace/inputs.py",
    "InputField.options": "workspace/inputs.py",
    "InputField.allow_custom": "workspace/inputs.py",
    "InputField.multiple": "workspace/inputs.py",
    "InputField.order": "server/routes_tasks.py",
    "SchedulerTrigger.type": "workspace/models.py",  # selects the trigger model
    "SchedulerTrigger.task": "triggers/scheduler.py",
    "SchedulerTrigger.cron": "triggers/cron_schedule.py",
    "SchedulerTrigger.timezone": "triggers/cron_schedule.py",
    "SchedulerTrigger.input": "triggers/scheduler.py",
    "SchedulerTrigger.catch_up": "triggers/scheduler.py",
    "SchedulerTrigger.concurrency": "triggers/scheduler.py",
    "SchedulerTrigger.enabled": "triggers/scheduler.py",
    "WebhookTrigger.type": "workspace/models.py",  # selects the trigger model
    "WebhookTrigger.task": "server/routes_webhooks.py",
    "WebhookTrigger.name": "server/routes_webhooks.py",
    "WebhookTrigger.secret": "server/routes_webhooks.py",
    "WebhookTrigger.input": "server/routes_webhooks.py",
    "WebhookTrigger.mode": "server/routes_webhooks.py",
    "WebhookTrigger.timeout_secs": "server/routes_webhooks.py",
    "WebhookTrigger.max_body_bytes": "server/routes_webhooks.py",
    "WebhookTrigger.enabled": "server/routes_webhooks.py",
    "WebhookTrigger.input_shape": "server/routes_webhooks.py",
    "EventSourceTrigger.type": "workspace/models.py",  # selects the trigger model
    "EventSourceTrigger.task": "triggers/event_source.py",
    "EventSourceTrigger.target_task": "triggers/consumers.py",
    "EventSourceTrigger.env": "triggers/consumers.py",
    "EventSourceTrigger.input": "triggers/consumers.py",
    "EventSourceTrigger.restart_policy": "triggers/event_source.py",
    "EventSourceTrigger.backoff_secs": "workspace/models.py",
    "EventSourceTrigger.max_in_flight": "triggers/consumers.py",
    "EventSourceTrigger.max_line_bytes": "triggers/consumers.py",
    "EventSourceTrigger.dedup_key": "triggers/consumers.py",
    "EventSourceTrigger.max_crashes": "triggers/event_source.py",
    "EventSourceTrigger.crash_window_secs": "triggers/event_source.py",
    "EventSourceTrigger.healthy_run_secs": "triggers/event_source.py",
    "EventSourceTrigger.enabled": "triggers/event_source.py",
    # Flow control: rendered onto the job by the dispatcher, enforced by the store's claim.
    "Task.concurrency": "dispatch/flow.py",
    "Task.rate_limit": "dispatch/flow.py",
    "Task.priority": "dispatch/flow.py",
    "Concurrency.key": "dispatch/flow.py",
    "Concurrency.limit": "dispatch/flow.py",
    "Concurrency.strategy": "dispatch/flow.py",
    "RateLimit.key": "dispatch/flow.py",
    "RateLimit.limit": "dispatch/flow.py",
    "RateLimit.per": "dispatch/flow.py",
    "SchedulerTrigger.priority": "dispatch/flow.py",
    "WebhookTrigger.priority": "dispatch/flow.py",
    "EventSourceTrigger.priority": "dispatch/flow.py",
}

# Documentation only: headwater keeps them and shows them (API / CLI), as Strøm's UI does.
DOCUMENTATION: dict[str, str] = {
    "Task.name": "cli/workspace_cmds.py",
    "Task.description": "server/routes_tasks.py",
    "Step.description": "server/routes_tasks.py",
    "SchedulerTrigger.description": "cli/workspace_cmds.py",
    "WebhookTrigger.description": "cli/workspace_cmds.py",
    "EventSourceTrigger.description": "cli/workspace_cmds.py",
}

# Descriptive keys: comments for the reader of the YAML (Strøm's engine does not act on
# them either; its UI shows them). The input schema's are part of GET /tasks/{name}.
DESCRIPTIVE = frozenset(
    {
        "Step.name",
        "Action.name",
        "Action.description",
        "Action.output",  # the schema of the OUTPUT object
        "InputField.name",
        "InputField.description",
        "InputField.secret",  # marks the field in the API schema; values come from secrets
    }
)

# Accepted, no effect: `validate` warns (the YAML that shows it, and the warning's words).
WARNED: dict[str, tuple[str, str]] = {
    "Task.mode": (
        "tasks:\n  t:\n    mode: local\n    flow:\n      a: {action: ok}\n",
        "`mode: local` has no effect in headwater",
    ),
}

OK_ACTION = 'actions:\n  ok: {type: script, script: "true"}\n'


def _models(roots: list[type[BaseModel]]) -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    stack = list(roots)
    while stack:
        model = stack.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for info in model.model_fields.values():
            stack.extend(_nested(info.annotation))
    return found


def _nested(tp: object) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _nested(arg)]


WORKSPACE_MODELS = {
    name: model
    for name, model in _models([Workspace]).items()
    if not issubclass(model, ReceiverTriggerBase)
}


def _mentions(module: str, field: str) -> bool:
    text = (SRC / module).read_text()
    return re.search(rf"\.{field}\b|[\"']{field}[\"']|\b{field}=", text) is not None


def test_every_workspace_field_is_acted_on_documented_or_warned() -> None:
    fields = {f"{m}.{f}" for m, model in WORKSPACE_MODELS.items() for f in model.model_fields}
    registered = ACTED_ON.keys() | DOCUMENTATION.keys() | WARNED.keys() | DESCRIPTIVE
    assert sorted(fields - registered) == [], "accepted keys that nothing reads"
    assert sorted(registered - fields) == [], "registry entries for fields that are gone"


@pytest.mark.parametrize("entry", sorted({**ACTED_ON, **DOCUMENTATION}.items()))
def test_the_named_module_reads_the_field(entry: tuple[str, str]) -> None:
    dotted, module = entry
    field = dotted.split(".")[1]
    assert _mentions(module, field), f"{module} does not read {dotted}"


@pytest.mark.parametrize("dotted", sorted(WARNED))
def test_keys_without_effect_get_a_validate_warning(dotted: str, tmp_path: Path) -> None:
    yaml, words = WARNED[dotted]
    path = tmp_path / "ws.yaml"
    path.write_text(OK_ACTION + yaml)
    report = check_workspace(path)
    assert report.valid
    assert any(words in p.message for p in report.problems), report.problems


@pytest.mark.parametrize("kind", sorted(RECEIVER_TRIGGER_MODELS))
def test_every_receiver_trigger_field_is_read(kind: str) -> None:
    model = RECEIVER_TRIGGER_MODELS[kind]
    readers = [
        SRC / "triggers" / "receivers" / kind.replace("-", "_"),
        SRC / "triggers" / "receivers",
        SRC / "triggers" / "consumers.py",
        SRC / "dispatch" / "dispatcher.py",
        SRC / "dispatch" / "gather.py",
        SRC / "cli" / "workspace_cmds.py",
        SRC / "workspace" / "loader.py",  # target_workflow: the trigger's workflow task
    ]
    text = "\n".join(
        p.read_text()
        for reader in readers
        for p in ([reader] if reader.is_file() else sorted(reader.rglob("*.py")))
    )
    unread = [
        f for f in model.model_fields if re.search(rf"\.{f}\b|[\"']{f}[\"']|\b{f}=", text) is None
    ]
    assert unread == [], f"{kind} trigger keys that nothing reads"


@pytest.mark.parametrize(
    ("yaml", "words"),
    [
        ("tasks:\n  t:\n    flow:\n      a: {type: agent}\n", "type: agent"),
    ],
)
def test_strom_features_not_built_yet_say_so(yaml: str, words: str, tmp_path: Path) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(OK_ACTION + yaml)
    report = check_workspace(path)
    messages = [p.message for p in report.problems if words in p.message]
    assert messages, report.problems
    assert all("not supported yet" in m for m in messages), messages


def test_input_order_orders_the_fields_in_the_task_api() -> None:
    from headwater.server.routes_tasks import task_json

    ws = Workspace.model_validate(
        {
            "actions": {"ok": {"type": "script", "script": "true"}},
            "tasks": {
                "t": {
                    "input": {
                        "zone": {"order": 2},
                        "free": {},
                        "name": {"order": 1},
                    },
                    "flow": {"a": {"action": "ok"}},
                }
            },
        }
    )
    assert list(task_json(ws, "t", ws.tasks["t"])["input"]) == ["name", "zone", "free"]


def test_a_webhook_task_reading_strom_request_fields_is_told_to_set_input_shape(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(
        "actions:\n  ci: {type: script, script: 'echo {{ input.body.ref }}'}\n"
        "tasks:\n  ci:\n    flow:\n      run: {action: ci}\n"
        "triggers:\n  gh: {type: webhook, task: ci}\n"
        "  strom: {type: webhook, name: s, task: ci, input_shape: request}\n"
    )
    report = check_workspace(path)
    warned = [p.message for p in report.problems if "input_shape: request" in p.message]
    assert len(warned) == 1 and "trigger 'gh'" in warned[0] and "`input.body`" in warned[0]
