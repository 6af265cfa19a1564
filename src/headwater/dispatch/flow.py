"""A job's flow limits and priority, rendered when the job is created.

The task's ``concurrency``/``rate_limit`` keys and its ``priority`` (or the trigger's,
which wins) are templates over the job's ``input``. Keys are scoped to their task
(``<workspace>/<task>:<rendered key>``; no key: ``<workspace>/<task>``), so two tasks
never share a limit by accident. A template that does not render (or renders an empty or
overlong key, or a priority that is not an integer) makes the event a rejected one with
that reason, like an invalid input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from headwater.core.records import NO_FLOW, JobFlow
from headwater.errors import InputValidationError, TemplateError
from headwater.workspace.flow_models import MAX_KEY_CHARS, Concurrency, RateLimit
from headwater.workspace.models import Task, Workspace
from headwater.workspace.templating import TemplateEngine

__all__ = ["FlowPlan", "trigger_priorities"]

_MAX_PRIORITY = 2**31 - 1  # the column is a 32-bit integer


def trigger_priorities(ws: Workspace) -> dict[str, int | str]:
    """Source id (``<workspace>/<trigger>``) → the trigger's ``priority``, where set."""
    found: dict[str, int | str] = {}
    for key, trigger in ws.triggers.items():
        priority = getattr(trigger, "priority", None)
        if priority is not None:
            found[f"{ws.name}/{key}"] = priority
    return found


@dataclass(frozen=True, slots=True)
class FlowPlan:
    """One task's flow settings, ready to render per job."""

    scope: str  # "<workspace>/<task>"
    concurrency: Concurrency | None
    rate_limit: RateLimit | None
    priority: int | str | None

    @classmethod
    def of(cls, workspace: str, task_name: str, task: Task) -> FlowPlan | None:
        if task.concurrency is None and task.rate_limit is None and task.priority is None:
            return None
        return cls(f"{workspace}/{task_name}", task.concurrency, task.rate_limit, task.priority)

    def render(
        self,
        templates: TemplateEngine,
        task: str,
        job_input: Mapping[str, Any],
        trigger_priority: int | str | None,
    ) -> tuple[int, JobFlow]:
        context = {"input": job_input}
        try:
            spec = trigger_priority if trigger_priority is not None else self.priority
            priority = _priority(templates, spec, context)
            flow = NO_FLOW
            c, r = self.concurrency, self.rate_limit
            if c is not None or r is not None:
                flow = JobFlow(
                    concurrency_key=self._key(templates, c.key, context) if c else None,
                    concurrency_limit=c.limit if c else 1,
                    concurrency_strategy=c.strategy if c else NO_FLOW.concurrency_strategy,
                    rate_key=self._key(templates, r.key, context) if r else None,
                    rate_limit=r.limit if r else 1,
                    rate_per=r.per if r else 1.0,
                )
        except (TemplateError, ValueError) as exc:
            raise InputValidationError(task, [str(exc)]) from None
        return priority, flow

    def _key(self, templates: TemplateEngine, key: str | None, context: dict[str, Any]) -> str:
        if key is None:
            return self.scope
        rendered = templates.render_str(key, context, where="key")
        if not rendered:
            raise ValueError(f"the key {key!r} rendered empty")
        if len(rendered) > MAX_KEY_CHARS:
            raise ValueError(f"the key {key!r} rendered longer than {MAX_KEY_CHARS} characters")
        return f"{self.scope}:{rendered}"


def _priority(templates: TemplateEngine, spec: int | str | None, context: dict[str, Any]) -> int:
    if spec is None:
        return 0
    value: Any = spec
    if isinstance(spec, str):
        value = templates.render(spec, context, where="priority")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"priority rendered {value!r}, not an integer") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"priority rendered {value!r}, not an integer")
    if abs(value) > _MAX_PRIORITY:
        raise ValueError(f"priority {value} is out of range (±{_MAX_PRIORITY})")
    return value
