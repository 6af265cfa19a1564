"""What a worker needs to run an event-source consumer job: which trigger it serves, the
trigger's ``env`` (secrets rendered, never stored) and the line hook that turns its
``OUTPUT:`` lines into events. Shared by the embedded Node and remote workers, which
differ only in the ``Emitter`` (the store, or a server over HTTP)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from headwater.engine.logwriter import LogWriter
from headwater.store.base import JobRecord
from headwater.triggers.cursor import CURSOR_ENV
from headwater.triggers.emitter import Emitter, EventSourceLineHook
from headwater.triggers.event_source import CONSUMER_SOURCE_TYPE
from headwater.workspace.models import EventSourceTrigger, Workspace
from headwater.workspace.secret_refs import seal
from headwater.workspace.secret_tree import secret_scope
from headwater.workspace.templating import TemplateEngine

__all__ = ["consumer_env", "consumer_line_hook", "consumer_resume_env", "consumer_trigger"]


def consumer_trigger(ws: Workspace, job: JobRecord) -> tuple[str, EventSourceTrigger] | None:
    """The event-source trigger (key, definition) a consumer job serves; None otherwise."""
    if job.source_type != CONSUMER_SOURCE_TYPE or job.source_id is None:
        return None
    key = job.source_id.removesuffix("#consumer")
    name = key.removeprefix(f"{ws.name}/")
    trigger = ws.triggers.get(name)
    if isinstance(trigger, EventSourceTrigger):
        return key, trigger
    return None


def consumer_env(
    ws: Workspace, templates: TemplateEngine, secrets: Mapping[str, str], job: JobRecord
) -> Mapping[str, str]:
    found = consumer_trigger(ws, job)
    if found is None:
        return {}
    key, trigger = found
    ctx = secret_scope(secrets)
    return {
        k: str(templates.render(v, ctx, where=f"trigger {key!r} env {k!r}"))
        for k, v in trigger.env.items()
    }


async def consumer_resume_env(
    ws: Workspace, job: JobRecord, read_cursor: Callable[[str], Awaitable[str | None]]
) -> Mapping[str, str]:
    """``HEADWATER_CURSOR``: the trigger's last committed cursor, read as the consumer
    step starts (absent when no event carried one yet)."""
    found = consumer_trigger(ws, job)
    if found is None:
        return {}
    cursor = await read_cursor(found[0])
    return {CURSOR_ENV: cursor} if cursor is not None else {}


def consumer_line_hook(
    ws: Workspace,
    templates: TemplateEngine,
    secrets: Mapping[str, str],
    job: JobRecord,
    step: str,
    step_attempt: int,
    emitter_for: Callable[[str, EventSourceTrigger], Emitter],
    logs: LogWriter,
) -> EventSourceLineHook | None:
    """The hook of a consumer job's step (None for any other job). ``emitter_for(key,
    trigger)`` gives the Emitter (embedded: one shared; remote: one per consumer run)."""
    found = consumer_trigger(ws, job)
    if found is None:
        return None
    key, trigger = found
    where = f"trigger {key!r} input"
    defaults = templates.render(trigger.input, secret_scope(secrets), where=where)
    event_key: Callable[[Mapping[str, Any]], str] | None = None
    template = trigger.dedup_key
    if template is not None:

        def event_key(payload: Mapping[str, Any]) -> str:
            rendered = templates.render_str(template, {"payload": payload}, where="dedup_key")
            if not rendered:
                raise ValueError("dedup_key rendered empty")
            return rendered

    return EventSourceLineHook(
        job,
        step,
        step_attempt,
        key,
        trigger.target_task,
        # Secret values become references the worker fills in: never stored.
        seal(defaults, secrets, key) if isinstance(defaults, Mapping) else {},
        trigger.max_in_flight,
        trigger.max_line_bytes,
        emitter_for(key, trigger),
        logs,
        event_key=event_key,
    )
