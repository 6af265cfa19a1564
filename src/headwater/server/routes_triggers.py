"""``/api/triggers``: the workspace's triggers, with their live state when known.

Today the list comes from the workspace alone. The runtime of issue "Event-source
triggers" adds state (running, restarts, quarantine, in-flight) by implementing
``TriggerStateProvider``; each trigger's ``state`` is then its entry, otherwise null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.params import Depends
from pydantic import BaseModel, ConfigDict, Field

from headwater.errors import ConfigError
from headwater.server.routes_common import RuntimeDep
from headwater.server.runtime import REDACTED, Runtime, TriggerControl, TriggerStateProvider
from headwater.store.base import PauseKind
from headwater.workspace.models import ReceiverTriggerBase, Trigger, WebhookTrigger

__all__ = ["TriggerOut", "trigger_json", "triggers_router"]


class TriggerOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # type-specific fields (timezone, mode...)

    name: str
    type: str
    task: str
    target_task: str | None = Field(
        default=None, description="event_source: the task each emitted event starts."
    )
    enabled: bool
    description: str | None = None
    cron: str | None = None
    state: dict[str, Any] | None = Field(
        default=None, description="Live state from the runtime, when it tracks one."
    )
    paused: bool = Field(False, description="Stopped by headwater pause until resumed.")


def triggers_router(dependencies: Sequence[Depends] = ()) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["triggers"], dependencies=list(dependencies))

    @router.get("/triggers", response_model=list[TriggerOut], summary="The workspace's triggers")
    async def list_triggers(runtime: RuntimeDep) -> list[dict[str, Any]]:
        ws = runtime.workspace()
        states = await _trigger_states(runtime)
        paused = {p.name for p in await runtime.store.list_paused(PauseKind.TRIGGER)}
        data: list[dict[str, Any]] = runtime.redact(
            [
                {**trigger_json(name, trig, states.get(name)), "paused": name in paused}
                for name, trig in sorted(ws.triggers.items())
            ]
        )
        return data

    @router.post("/triggers/{name}/restart", summary="Start an event source again")
    async def restart_trigger(name: str, runtime: RuntimeDep) -> dict[str, Any]:
        control = _control(runtime)
        return {"name": name, "state": runtime.redact(dict(await control.restart_trigger(name)))}

    @router.post("/triggers/{name}/release", summary="Release a quarantined event source")
    async def release_trigger(name: str, runtime: RuntimeDep) -> dict[str, Any]:
        control = _control(runtime)
        return {"name": name, "state": runtime.redact(dict(await control.release_trigger(name)))}

    @router.post("/workspaces/reload", summary="Load the workspace again")
    async def reload_workspace(runtime: RuntimeDep) -> dict[str, Any]:
        return dict(await _control(runtime).reload_workspace())

    return router


def _control(runtime: Runtime) -> TriggerControl:
    if not isinstance(runtime, TriggerControl):
        raise ConfigError("this server does not manage triggers")
    return runtime


async def _trigger_states(runtime: Runtime) -> Mapping[str, Mapping[str, Any]]:
    if isinstance(runtime, TriggerStateProvider):
        return await runtime.trigger_states()
    return {}


def trigger_json(
    name: str, trigger: Trigger, state: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    # The webhook secret authenticates callers of the hook: never shown, only whether
    # one is set.
    data: dict[str, Any] = {
        "name": name,
        "target_task": None,
        "cron": None,
        # A webhook's own ``name`` is its URL name; it must not replace the trigger's.
        **trigger.model_dump(mode="json", exclude={"secret", "name"}),
    }
    data["task"] = trigger.task  # a receiver's is its target task (a property)
    if isinstance(trigger, WebhookTrigger):
        data["has_secret"] = trigger.secret is not None
        data["path"] = f"/hooks/{trigger.name or name}"
    if isinstance(trigger, ReceiverTriggerBase):
        # Connection settings written in clear (not as {{ secret.x }}) may hold passwords.
        for field, value in trigger.templated().items():
            if "{{" not in value and _may_hold_secret(field, value):
                data[field] = REDACTED
    data["state"] = dict(state) if state is not None else None
    return data


def _may_hold_secret(field: str, value: str) -> bool:
    if any(word in field for word in ("password", "secret", "token", "key")):
        return True
    if "sharedaccesskey=" in value.lower():  # an Azure connection string
        return True
    _, sep, rest = value.partition("://")
    return bool(sep) and "@" in rest.split("/", 1)[0]  # user:password@host
