"""Pydantic models of a workspace: actions, tasks (flows of steps), triggers, secrets.

The models accept both the seed's spelling and Strøm's (see DESIGN.md "Compatibility
with Strøm's workspace format"). Cross-references (a step's action, a trigger's task)
are checked by ``headwater.workspace.validate``, not here, so that every problem of a
workspace is reported at once with its file and line.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    SerializeAsAny,
    TypeAdapter,
    field_validator,
    model_validator,
)

from headwater.workspace.durations import Duration, parse_duration
from headwater.workspace.flow import Batch, Debounce
from headwater.workspace.flow_models import Concurrency, Priority, RateLimit
from headwater.workspace.receiver_triggers import (
    RECEIVER_TRIGGER_MODELS,
    RECEIVERS,
    ReceiverTriggerBase,
    RedisStreamTrigger,
)
from headwater.workspace.secret_tree import flatten_secrets

__all__ = [
    "ABILITY_TAGS",
    "RECEIVER_TRIGGER_MODELS",
    "Action",
    "ActionType",
    "Duration",
    "EventSourceTrigger",
    "FieldType",
    "Hook",
    "InputField",
    "Language",
    "ReceiverTrigger",
    "ReceiverTriggerBase",
    "RedisStreamTrigger",
    "RestartPolicy",
    "RetryPolicy",
    "RetryStrategy",
    "RunnerKind",
    "SchedulerTrigger",
    "Step",
    "Task",
    "TaskMode",
    "Trigger",
    "WebhookInputShape",
    "WebhookMode",
    "WebhookTrigger",
    "Workspace",
    "parse_duration",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class FieldType(StrEnum):
    STRING = "string"
    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    ARRAY = "array"
    OBJECT = "object"
    DATE = "date"
    DATETIME = "datetime"
    JSON = "json"  # Strøm's name for "any JSON value"
    ANY = "any"


# Spellings users write for the types above (Strøm accepts ``bool``).
_FIELD_TYPE_ALIASES = {
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "str": "string",
    "list": "array",
    "dict": "object",
}


def _field_type_alias(value: object) -> object:
    if isinstance(value, str):
        return _FIELD_TYPE_ALIASES.get(value, value)
    return value


class InputField(_Model):
    """One field of a task's (or action's) input schema."""

    type: Annotated[FieldType, BeforeValidator(_field_type_alias)] = FieldType.STRING
    name: str | None = None
    description: str | None = None
    required: bool = False
    default: Any = None
    options: list[Any] | None = None
    allow_custom: bool = False
    multiple: bool = False  # the value is a list of such values (Strøm multi-select)
    secret: bool = False
    order: int | None = None


class RetryStrategy(StrEnum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


# Strøm's spelling: {max_attempts, delay, backoff: fixed|exponential, jitter}.
_STROM_RETRY_KEYS = frozenset({"max_attempts", "delay", "jitter"})
_STROM_DEFAULT_DELAY = 30.0  # Strøm's default `delay`
_STROM_BACKOFF_CAP = 64  # Strøm's exponential backoff stops growing at 64 × delay


class RetryPolicy(_Model):
    """Re-run a failed step up to ``count`` more times.

    headwater's form ``{count, backoff, max_backoff}`` waits ``backoff × 2^(n−1)``
    (at most ``max_backoff``) before retry n. Strøm's form ``{max_attempts, delay,
    backoff: fixed|exponential, jitter}`` is read into the same fields: ``max_attempts``
    retries (Strøm retries while its retry count is below ``max_attempts``), ``delay``
    each time or doubling up to 64 × ``delay``, plus up to 25 % random ``jitter``."""

    count: int = Field(default=0, ge=0, le=100)
    backoff: Duration = 1.0
    max_backoff: Duration = 300.0
    strategy: RetryStrategy = RetryStrategy.EXPONENTIAL
    jitter: bool = False

    @model_validator(mode="before")
    @classmethod
    def _strom_form(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        strom = bool(_STROM_RETRY_KEYS & data.keys()) or data.get("backoff") in (
            "fixed",
            "exponential",
        )
        if not strom:
            return data
        mixed = sorted({"count", "max_backoff", "strategy"} & data.keys())
        if mixed:
            raise ValueError(
                f"mixes Strøm's retry keys (max_attempts, delay, backoff: fixed|exponential,"
                f" jitter) with headwater's ({', '.join(mixed)}): use one form"
            )
        unknown = sorted(data.keys() - _STROM_RETRY_KEYS - {"backoff"})
        if unknown:
            return data  # extra="forbid" names them
        attempts = data.get("max_attempts", 3)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 10:
            raise ValueError(f"max_attempts must be a whole number from 1 to 10, not {attempts!r}")
        delay = parse_duration(data.get("delay", _STROM_DEFAULT_DELAY))
        if delay > 3600:
            raise ValueError("delay must be at most 1h")
        strategy = data.get("backoff", "fixed")
        if strategy not in ("fixed", "exponential"):
            raise ValueError(f"backoff must be fixed or exponential, not {strategy!r}")
        return {
            "count": attempts,
            "backoff": delay,
            "max_backoff": delay * _STROM_BACKOFF_CAP,
            "strategy": strategy,
            "jitter": data.get("jitter", False),
        }

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if self.strategy is RetryStrategy.FIXED:
            base = self.backoff
        else:
            base = min(self.max_backoff, self.backoff * (2 ** max(0, attempt - 1)))
        if self.jitter:
            base += base * 0.25 * rand()
        return float(base)


def _retry_shorthand(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"count": value}
    return value


class ActionType(StrEnum):
    SCRIPT = "script"
    DOCKER = "docker"
    POD = "pod"
    TASK = "task"
    FUNCTION = "function"
    APPROVAL = "approval"  # Strøm's approval gate: the job waits for a person
    WORKFLOW = "workflow"  # a Python @headwater.workflow, run durably as the step


class RunnerKind(StrEnum):
    LOCAL = "local"
    DOCKER = "docker"
    POD = "pod"


# The tags a step needs for its runner (``required_tags``); every other tag is written
# by the user (Strøm's affinity tags) and only a worker configured with it has it.
ABILITY_TAGS = frozenset({"script", "docker", "pod", "function"})


class Language(StrEnum):
    SHELL = "shell"
    BASH = "bash"
    SH = "sh"
    PYTHON = "python"

    @property
    def is_shell(self) -> bool:
        return self in (Language.SHELL, Language.BASH, Language.SH)


class Action(_Model):
    """What runs: a script, an image, another task, or a Python callable."""

    type: ActionType
    name: str | None = None
    description: str | None = None
    # script
    script: str | None = None
    source: str | None = None
    language: Language = Language.SHELL
    interpreter: str | None = None
    dependencies: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)  # templates: the script's $1, $2, ...
    runner: RunnerKind = RunnerKind.LOCAL
    # images (type docker/pod, or type script with runner docker/pod and no script)
    image: str | None = None
    cmd: str | list[str] | None = None
    entrypoint: str | list[str] | None = None
    command: list[str] | None = None
    manifest: dict[str, Any] | None = None
    resources: dict[str, str] | None = None
    # type task
    task: str | None = None
    # type function: "package.module:callable"
    function: str | None = None
    # type workflow: "package.module:workflow" (a @headwater.workflow); runs as a function
    # step does, so ``function`` is set to it too
    workflow: str | None = None
    # type approval: what the approver reads (a template); ``timeout`` bounds the wait
    message: str | None = None
    # common
    env: dict[str, str] = Field(default_factory=dict)
    timeout: Duration | None = None
    tags: list[str] = Field(default_factory=list)
    workdir: str | None = None
    input: dict[str, InputField] = Field(default_factory=dict)
    output: dict[str, InputField] | None = None
    # The retry of every step that runs this action and sets no retry of its own.
    retry: Annotated[RetryPolicy | None, BeforeValidator(_retry_shorthand)] = None
    # Set when several workspaces are combined (headwater.workspace.multi): the workspace
    # that owns the action, whose folder and secrets its body uses. Not YAML keys.
    _owner: str | None = PrivateAttr(default=None)
    _owner_root: Path | None = PrivateAttr(default=None)

    @property
    def owner(self) -> str | None:
        return self._owner

    @property
    def owner_root(self) -> Path | None:
        return self._owner_root

    def owned_by(self, workspace: str, root: Path) -> Action:
        """A copy that runs in ``workspace`` (its files under ``root``, its secrets)."""
        copy = self.model_copy()
        copy._owner = workspace
        copy._owner_root = root
        return copy

    @model_validator(mode="before")
    @classmethod
    def _image_as_is(cls, data: object) -> object:
        # The seed runs an image as-is with `type: script` + `runner: docker|pod` + `image`
        # and no script; Strøm spells that `type: docker|pod`. Same meaning: canonicalise.
        if (
            isinstance(data, dict)
            and data.get("type") == "script"
            and data.get("runner") in ("docker", "pod")
            and data.get("image")
            and data.get("script") is None
            and data.get("source") is None
        ):
            runner = data["runner"]
            data = {k: v for k, v in data.items() if k != "runner"}
            data["type"] = runner
        return data

    @model_validator(mode="before")
    @classmethod
    def _workflow_runs_as_a_function(cls, data: object) -> object:
        # A workflow step is a function step whose callable is the workflow: the engine
        # runs it the same way and the workflow's wrapper knows it is the job's body.
        if isinstance(data, dict) and data.get("type") == "workflow" and data.get("workflow"):
            data = {**data, "function": data["workflow"]}
        return data

    @field_validator("env", "resources", mode="before")
    @classmethod
    def _env_values_are_strings(cls, value: object) -> object:
        # `cpu: 2` under resources: is "2", like an env var.
        if isinstance(value, dict):
            return {k: (v if isinstance(v, str) else _scalar_to_env(v)) for k, v in value.items()}
        return value

    @property
    def effective_runner(self) -> RunnerKind:
        """The runner this action needs: ``type: docker`` is ``runner: docker``, and so on."""
        if self.type is ActionType.DOCKER:
            return RunnerKind.DOCKER
        if self.type is ActionType.POD:
            return RunnerKind.POD
        return self.runner

    @property
    def required_tags(self) -> frozenset[str]:
        """Worker tags a worker must have to run this action."""
        if self.type in (ActionType.TASK,):
            return frozenset(self.tags)
        if self.type is ActionType.APPROVAL:  # decided through the server: no runner
            return frozenset()
        base = {RunnerKind.LOCAL: "script", RunnerKind.DOCKER: "docker", RunnerKind.POD: "pod"}
        if self.type in (ActionType.FUNCTION, ActionType.WORKFLOW):
            return frozenset({"function", *self.tags})
        return frozenset({base[self.effective_runner], *self.tags})


def _scalar_to_env(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


class Step(_Model):
    """One node of a task's flow."""

    action: str | None = None
    name: str | None = None
    description: str | None = None
    depends_on: Annotated[list[str], BeforeValidator(_one_or_many)] = Field(default_factory=list)
    input: dict[str, Any] = Field(default_factory=dict)
    continue_on_failure: bool = False
    timeout: Duration | None = None
    retry: Annotated[RetryPolicy | None, BeforeValidator(_retry_shorthand)] = None
    when: str | None = None
    # Strøm's loop: one instance of the step per item (`each.item`, `each.index`); see
    # headwater.engine.fanout. A list (its strings are templates) or one template.
    for_each: list[Any] | str | None = None
    sequential: bool = False
    max_parallel: int | None = Field(default=None, ge=1)
    # Worker tags this step needs on top of its action's (Strøm's step `tags`).
    tags: list[str] = Field(default_factory=list)
    # An inline action (Strøm allows action fields directly on a step); the loader
    # moves them here so that every step has exactly one of ``action`` / ``inline``.
    inline: Action | None = None


class TaskMode(StrEnum):
    LOCAL = "local"
    DISTRIBUTED = "distributed"


class Hook(_Model):
    action: str
    input: dict[str, Any] = Field(default_factory=dict)


class Task(_Model):
    """A DAG of steps with an input schema."""

    name: str | None = None
    description: str | None = None
    folder: str | None = None
    mode: TaskMode = TaskMode.DISTRIBUTED
    input: dict[str, InputField] = Field(default_factory=dict)
    flow: dict[str, Step]
    timeout: Duration | None = None
    # Strøm's task-level retry: a failed job starts a new job of the task (same input).
    retry: Annotated[RetryPolicy | None, BeforeValidator(_retry_shorthand)] = None
    on_success: list[Hook] = Field(default_factory=list)
    on_error: list[Hook] = Field(default_factory=list)
    on_suspended: list[Hook] = Field(default_factory=list)  # a step waits for approval
    on_cancel: list[Hook] = Field(default_factory=list)
    # Flow control (headwater.workspace.flow_models), enforced by the store's claim.
    concurrency: Concurrency | None = None
    rate_limit: RateLimit | None = None
    priority: Priority | None = None


class RestartPolicy(StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on_failure"
    NEVER = "never"


class SchedulerConcurrency(StrEnum):
    """Strøm's scheduler ``concurrency`` (see ``headwater.triggers.concurrency``)."""

    ALLOW = "allow"
    SKIP = "skip"
    CANCEL_PREVIOUS = "cancel_previous"


class _TriggerBase(_Model):
    enabled: bool = True
    description: str | None = None
    priority: Priority | None = None  # the jobs' priority; wins over the task's


class SchedulerTrigger(_TriggerBase):
    type: Literal["scheduler"]
    task: str
    cron: str
    timezone: str = "UTC"
    input: dict[str, Any] = Field(default_factory=dict)
    catch_up: bool = False
    concurrency: SchedulerConcurrency = SchedulerConcurrency.ALLOW
    force_refresh: bool = False  # read the workspace files again before each job


class WebhookMode(StrEnum):
    ASYNC = "async"
    SYNC = "sync"


class WebhookInputShape(StrEnum):
    BODY = "body"  # the JSON object body's fields are the input (headwater's default)
    REQUEST = "request"  # Strøm's {body, headers, method, query}


class WebhookTrigger(_TriggerBase):
    type: Literal["webhook"]
    task: str
    name: str | None = None  # URL name; defaults to the trigger's key
    secret: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    mode: WebhookMode = WebhookMode.ASYNC
    timeout_secs: int = Field(default=30, ge=1, le=300)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    input_shape: WebhookInputShape = WebhookInputShape.BODY
    force_refresh: bool = False  # read the workspace files again before each job
    # Gather events into one job (headwater.workspace.flow).
    debounce: Debounce | None = None
    batch: Batch | None = None


class EventSourceTrigger(_TriggerBase):
    type: Literal["event_source"]
    task: str
    target_task: str
    env: dict[str, str] = Field(default_factory=dict)
    input: dict[str, Any] = Field(default_factory=dict)
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    backoff_secs: float = Field(default=5.0, ge=0)
    max_in_flight: int | None = Field(default=None, ge=0)
    max_line_bytes: int = Field(default=1_048_576, ge=1)
    # The event's own identity, e.g. "{{ payload.order_id }}": a consumer that restarts
    # and re-emits what it already emitted then makes no second job.
    dedup_key: str | None = None
    max_crashes: int = Field(default=5, ge=1)
    crash_window_secs: float = Field(default=60.0, gt=0)
    healthy_run_secs: float = Field(default=60.0, gt=0)
    # Gather events into one job (headwater.workspace.flow).
    debounce: Debounce | None = None
    batch: Batch | None = None

    @field_validator("env", mode="before")
    @classmethod
    def _env_values_are_strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: (v if isinstance(v, str) else _scalar_to_env(v)) for k, v in value.items()}
        return value

    def backoff_delay(self, consecutive_failures: int) -> float:
        """``backoff_secs × 2^(n−1)`` for the n-th consecutive restart, capped at 300 s."""
        n = max(1, consecutive_failures)
        return float(min(300.0, self.backoff_secs * (2 ** (n - 1))))


# A receiver trigger is whatever model the catalog holds for its type (a receiver
# registered after this module was imported included); the others are a fixed union.
ReceiverTrigger = ReceiverTriggerBase


_FIXED_TRIGGERS: TypeAdapter[SchedulerTrigger | WebhookTrigger | EventSourceTrigger] = TypeAdapter(
    Annotated[SchedulerTrigger | WebhookTrigger | EventSourceTrigger, Field(discriminator="type")]
)


def _trigger_by_type(value: Any) -> Any:
    if isinstance(value, ReceiverTriggerBase):
        return value
    if isinstance(value, dict):
        model = RECEIVERS.get(str(value.get("type")))
        if model is not None:
            return model.model_validate(value)
    return _FIXED_TRIGGERS.validate_python(value)


Trigger = Annotated[
    SchedulerTrigger | WebhookTrigger | EventSourceTrigger | SerializeAsAny[ReceiverTriggerBase],
    PlainValidator(_trigger_by_type),
]


class Workspace(_Model):
    """A loaded workspace. ``name`` and ``root`` are set by the loader, not the YAML."""

    name: str = "default"
    root: Path = Path(".")
    actions: dict[str, Action] = Field(default_factory=dict)
    tasks: dict[str, Task] = Field(default_factory=dict)
    triggers: dict[str, Trigger] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    on_success: list[Hook] = Field(default_factory=list)
    on_error: list[Hook] = Field(default_factory=list)
    on_suspended: list[Hook] = Field(default_factory=list)
    on_cancel: list[Hook] = Field(default_factory=list)
    # The workspaces combined into this one after the first (headwater.workspace.multi).
    _later: frozenset[str] = PrivateAttr(default=frozenset())

    @property
    def later_workspaces(self) -> frozenset[str]:
        return self._later

    @field_validator("secrets", mode="before")
    @classmethod
    def _secret_values_are_strings(cls, value: object) -> object:
        # `port: 5432` under secrets: is the literal "5432", like an env var; a map of
        # values (Strøm's nested secrets) is kept flat under dotted names (`db.password`).
        if isinstance(value, dict):
            return flatten_secrets(value, _scalar_to_env)
        return value

    def action_for(self, step: Step) -> Action:
        """The action a step runs (inline or named); the workspace is assumed valid."""
        if step.inline is not None:
            return step.inline
        assert step.action is not None
        return self.actions[step.action]

    def step_tags(self, step: Step) -> frozenset[str]:
        """Every tag a worker needs to run ``step``: its action's and its own."""
        need = self.action_for(step).required_tags
        return need | frozenset(step.tags) if step.tags else need

    def task(self, name: str) -> Task:
        from headwater.errors import NotFoundError

        try:
            return self.tasks[name]
        except KeyError:
            raise NotFoundError(
                f"task {name!r} is not defined in workspace {self.name!r}"
            ) from None
