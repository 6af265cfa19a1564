"""``/api/overview``: what the UI's overview charts draw, in one request.

Jobs per time bucket by status, the slowest tasks and the triggers' lag, over a window
of at most a day. The store reads only the jobs created in the window (an index range),
so the answer costs the same with a thousand jobs in the store or a million.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends
from pydantic import BaseModel, Field

from headwater.server.routes_common import RuntimeDep, Timestamp, iso_z
from headwater.server.runtime import Runtime, TriggerStateProvider
from headwater.store.base import JobStatus

__all__ = ["MAX_WINDOW", "OverviewOut", "overview_router", "parse_window"]

MAX_WINDOW = timedelta(days=1)
_MAX_BUCKETS = 240  # points per series: enough for a chart, few enough to send
_SLOWEST = 10
_WINDOW = re.compile(r"(\d{1,6})([smhd])")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LAG_FIELDS = ("lag_events", "lag_pending", "lag_ms", "lag_bytes")


class BucketOut(BaseModel):
    start: Timestamp = Field(description="The bucket's first instant (UTC).")
    counts: dict[str, int] = Field(
        description="Jobs created in the bucket by their current status; every status "
        "is present (0 when none)."
    )


class TaskDurationsOut(BaseModel):
    task: str
    runs: int = Field(description="Jobs of the task created in the window that finished.")
    failed: int
    p50_ms: float = Field(description="Run time (started to finished), nearest rank.")
    p95_ms: float
    max_ms: float


class TriggerLagOut(BaseModel):
    name: str
    type: str | None = None
    state: str | None = Field(None, description="The trigger's state (running, idle...).")
    lag_events: int | None = Field(None, description="Messages not acknowledged yet.")
    lag_pending: int | None = None
    lag_ms: float | None = Field(None, description="Age of the oldest unacknowledged one.")
    lag_bytes: int | None = None


class OverviewOut(BaseModel):
    since: Timestamp
    until: Timestamp
    window_secs: int
    bucket_secs: int = Field(
        description="Length of each bucket: 60 (jobs per minute) for windows up to 4 h, "
        "longer for longer windows so that there are at most 240 buckets."
    )
    buckets: list[BucketOut] = Field(description="Every bucket of the window, oldest first.")
    totals: dict[str, int] = Field(description="Jobs created in the window by status.")
    slowest_tasks: list[TaskDurationsOut] = Field(description="Highest p95 first, at most 10.")
    trigger_lag: list[TriggerLagOut] = Field(
        description="Triggers that report a lag (receivers), by name; null values: unknown."
    )


def parse_window(text: str) -> timedelta:
    """``15m``, ``1h``, ``24h``, ``1d`` → a duration from one minute to a day."""
    found = _WINDOW.fullmatch(text.strip().lower())
    if found is None:
        raise ValueError("a number and a unit (s, m, h or d), e.g. 15m, 1h, 24h")
    window = timedelta(seconds=int(found[1]) * _UNIT_SECS[found[2]])
    if not timedelta(minutes=1) <= window <= MAX_WINDOW:
        raise ValueError("between 1m and 24h")
    return window


def bucket_secs_for(window: timedelta) -> int:
    """Whole minutes, so that buckets line up with the clock."""
    return 60 * max(1, math.ceil(window.total_seconds() / _MAX_BUCKETS / 60))


def overview_router(dependencies: Sequence[Depends] = ()) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["overview"], dependencies=list(dependencies))

    @router.get(
        "/overview",
        response_model=OverviewOut,
        summary="Throughput by status, slowest tasks and trigger lag over a window",
        description="Counts the jobs created in the window (by their status now), the "
        "run times of those that finished, and the lag the triggers report.",
    )
    async def overview(
        runtime: RuntimeDep,
        window: Annotated[
            str, Query(description="How far back: 15m, 1h (default), 6h, 24h (at most).")
        ] = "1h",
    ) -> dict[str, Any]:
        try:
            span = parse_window(window)
        except ValueError as exc:
            problem = {"loc": ("query", "window"), "msg": str(exc), "type": "value_error"}
            raise RequestValidationError([problem]) from None
        bucket = bucket_secs_for(span)
        until = datetime.now(UTC)
        # The first bucket starts on a bucket boundary, so that each one is whole and a
        # chart refreshed a minute later shifts by one point.
        first = int((until - span).timestamp()) // bucket * bucket
        since = datetime.fromtimestamp(first, UTC)
        activity = await runtime.store.job_activity(since, bucket)
        slowest = await runtime.store.task_durations(since, _SLOWEST)
        last = int(until.timestamp()) // bucket * bucket
        series = {
            start: dict.fromkeys((s.value for s in JobStatus), 0)
            for start in range(first, last + 1, bucket)
        }
        totals = dict.fromkeys((s.value for s in JobStatus), 0)
        for row in activity:
            start = int(row.start.timestamp())
            series.setdefault(start, dict.fromkeys((s.value for s in JobStatus), 0))
            series[start][row.status.value] += row.count
            totals[row.status.value] += row.count
        data = {
            "since": iso_z(since),
            "until": iso_z(until),
            "window_secs": int(span.total_seconds()),
            "bucket_secs": bucket,
            "buckets": [
                {"start": iso_z(datetime.fromtimestamp(start, UTC)), "counts": counts}
                for start, counts in sorted(series.items())
            ],
            "totals": totals,
            "slowest_tasks": [
                {
                    "task": t.task,
                    "runs": t.runs,
                    "failed": t.failed,
                    "p50_ms": round(t.p50_ms, 1),
                    "p95_ms": round(t.p95_ms, 1),
                    "max_ms": round(t.max_ms, 1),
                }
                for t in slowest
            ],
            "trigger_lag": await _trigger_lag(runtime),
        }
        redacted: dict[str, Any] = runtime.redact(data)
        return redacted

    return router


async def _trigger_lag(runtime: Runtime) -> list[dict[str, Any]]:
    if not isinstance(runtime, TriggerStateProvider):
        return []
    states: Mapping[str, Mapping[str, Any]] = await runtime.trigger_states()
    types = {name: trig.type for name, trig in runtime.workspace().triggers.items()}
    lag = []
    for name, state in sorted(states.items()):
        if not any(field in state for field in _LAG_FIELDS):
            continue  # this kind of trigger reports no lag (cron, event sources)
        phase = state.get("state")
        lag.append(
            {
                "name": name,
                "type": state.get("type") or types.get(name),
                "state": phase if isinstance(phase, str) else None,
                **{field: _number(state.get(field)) for field in _LAG_FIELDS},
            }
        )
    return lag


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None
