"""Flow control on a trigger: ``debounce`` and ``batch`` (issue 17, items 3 and 4).

Both gather several events of one trigger into ONE job whose input is
``{"events": [...], "key": ...}`` (each entry is one event's input, in arrival order):

- ``debounce: {key, period, max_wait}``: events with the same key make one job, fired
  when no event of that key came for ``period``, or ``max_wait`` after the first one (a
  continuous stream still makes a job now and then).
- ``batch: {size, window, key}``: up to ``size`` events, or what came within ``window``
  of the first, make one job.

``key`` is a template over the event's input (``{{ input.customer_id }}``); without one,
every event of the trigger shares one key. The store keeps the buffered events (see
``headwater.store.gather_ops``), so a restart or a crash loses and repeats none.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headwater.workspace.durations import Duration

__all__ = ["MAX_KEY_CHARS", "Batch", "Debounce", "flow_templates"]

# A rendered key longer than this is refused (it is stored and indexed with each event).
MAX_KEY_CHARS = 512
_MAX_SECONDS = 7 * 86400.0  # a buffer held for over a week is a mistake, not a policy


class _Flow(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    key: str | None = None

    @field_validator("key")
    @classmethod
    def _key_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("key is empty: leave it out to gather every event of the trigger")
        return value


def _positive(name: str, value: float) -> float:
    if value <= 0:
        raise ValueError(f"{name} must be longer than 0s")
    if value > _MAX_SECONDS:
        raise ValueError(f"{name} must be at most 7d")
    return value


class Debounce(_Flow):
    """Events with the same key within ``period`` of each other make one job."""

    period: Duration
    max_wait: Duration | None = None

    @field_validator("period")
    @classmethod
    def _period(cls, value: float) -> float:
        return _positive("period", value)

    @field_validator("max_wait")
    @classmethod
    def _max_wait(cls, value: float | None) -> float | None:
        return None if value is None else _positive("max_wait", value)

    @model_validator(mode="after")
    def _max_wait_covers_period(self) -> Debounce:
        if self.max_wait is not None and self.max_wait < self.period:
            raise ValueError(
                f"max_wait ({self.max_wait:g}s) is shorter than period ({self.period:g}s):"
                " the job would always fire at max_wait; make max_wait at least the period"
            )
        return self


class Batch(_Flow):
    """Up to ``size`` events (or those within ``window`` of the first) make one job."""

    size: int = Field(ge=1, le=10_000)
    window: Duration = 1.0

    @field_validator("window")
    @classmethod
    def _window(cls, value: float) -> float:
        return _positive("window", value)


def flow_templates(trigger: Any) -> list[tuple[str, str]]:
    """(field, template) of the trigger's flow keys, for ``validate``."""
    found = []
    for name in ("debounce", "batch"):
        flow = getattr(trigger, name, None)
        if isinstance(flow, _Flow) and flow.key is not None:
            found.append((name, flow.key))
    return found
