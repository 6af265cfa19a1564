"""What every built-in receiver trigger has in common (one model per broker beside it).

A receiver trigger turns each message of a broker into one job of ``target_task``. The
connection fields named in ``secret_fields`` are templates rendered with the secret
context at start (``{{ secret.x }}``), checked by ``headwater validate`` for passwords
written in clear, and never shown in listings.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from headwater.workspace.flow import Batch, Debounce
from headwater.workspace.flow_models import Priority

__all__ = ["BodyFormat", "ReceiverTriggerBase"]

BodyFormat = Literal["auto", "json", "text"]


class ReceiverTriggerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    # Connection settings that are templates (URLs, passwords, keys).
    secret_fields: ClassVar[tuple[str, ...]] = ()
    # The package extra that installs the client library (``pip install 'headwater[x]'``)
    # and the modules it provides: `validate` and the start check name the missing one.
    pip_extra: ClassVar[str | None] = None
    client_modules: ClassVar[tuple[str, ...]] = ()
    # The field the SDK decorator takes as its first argument (``on_kafka(topic, …)``);
    # every other field is a keyword with the model's default.
    sdk_argument: ClassVar[str | None] = None

    type: str  # each broker's model narrows it to its Literal
    enabled: bool = True
    description: str | None = None
    target_task: str
    # A Python @headwater.workflow ("module:function") each message starts, its dedup key
    # the workflow id; the loader makes the task that runs it (headwater.workspace.loader).
    target_workflow: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    max_in_flight: int | None = Field(default=None, ge=1)
    priority: Priority | None = None  # the jobs' priority; wins over the task's
    # Template over {id, payload, metadata, input}; default: the broker's message identity.
    dedup_key: str | None = None
    # json: a body that is not JSON is a dead letter; text: kept as a string; auto: JSON
    # when it parses, else text, else base64 with its content type.
    format: BodyFormat = "auto"
    batch_size: int = Field(default=100, ge=1, le=10_000)
    # Gather messages into one job (headwater.workspace.flow); ``batch_size`` above is
    # how many messages are read at once, ``batch`` how many make one job.
    debounce: Debounce | None = None
    batch: Batch | None = None

    @property
    def task(self) -> str:
        # Trigger listings show every trigger's task; a receiver's is the target.
        return self.target_task

    @classmethod
    def missing_client(cls) -> str | None:
        """The install line when a client module of this receiver is not importable."""
        for module in cls.client_modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:  # a dotted name whose parent package is missing
                found = False
            if not found:
                return (
                    f"the {cls.trigger_type()} receiver needs {module!r}, which is not"
                    f" installed: pip install 'headwater[{cls.pip_extra}]'"
                )
        return None

    @classmethod
    def trigger_type(cls) -> str:
        """The ``type:`` value of this model (its ``Literal``)."""
        args = get_args(cls.model_fields["type"].annotation)
        if len(args) != 1 or not isinstance(args[0], str):
            raise TypeError(f"{cls.__name__}.type must be a Literal of one string")
        return args[0]

    def templated(self) -> dict[str, str]:
        """The connection fields that are set, by name (for validation and rendering)."""
        values = {name: getattr(self, name) for name in self.secret_fields}
        return {name: value for name, value in values.items() if isinstance(value, str)}
