"""The flow-control keys of a task (``concurrency``, ``rate_limit``, ``priority``) and of
a trigger (``priority``). Their templates render against the job's ``input`` when the job
is created (``headwater.dispatch.flow``); the store enforces the result on every claim."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from headwater.core.records import ConcurrencyStrategy

__all__ = ["MAX_KEY_CHARS", "Concurrency", "Priority", "RateLimit"]

# A rendered key longer than this is refused (the job is rejected with the reason): keys
# are indexed, and a key that long is a template rendering a whole payload by mistake.
MAX_KEY_CHARS = 500


class _Flow(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Concurrency(_Flow):
    """At most ``limit`` jobs of the task per rendered ``key`` run at once (no key: of
    the task). ``strategy``: what a job does when its key is full."""

    key: str | None = None
    limit: int = Field(default=1, ge=1, le=100_000)
    strategy: ConcurrencyStrategy = ConcurrencyStrategy.QUEUE


def _positive_duration(value: object) -> float:
    # models imports this module (its Task has these fields): the parser is read late.
    from headwater.workspace.models import parse_duration

    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("the period must be longer than zero, e.g. '1s' or '1m'")
    return seconds


class RateLimit(_Flow):
    """At most ``limit`` jobs of the task per rendered ``key`` start within any ``per``
    (a sliding window; no key: of the task)."""

    key: str | None = None
    limit: int = Field(ge=1, le=1_000_000)
    per: Annotated[float, BeforeValidator(_positive_duration)]


def _priority(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("priority is an integer or a template rendering one")
    if isinstance(value, str) and "{" not in value:
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError(
                f"priority {value!r} is not an integer (or a template rendering one)"
            ) from None
    return value


# An integer (higher is claimed first; default 0), or a template rendering one.
Priority = Annotated[int | str, BeforeValidator(_priority)]
