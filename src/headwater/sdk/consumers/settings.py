"""Settings of the consumer workers and their supervisor (the seed's CLI options)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from headwater.defaults import DEFAULT_REDIS_URL

__all__ = ["DEFAULT_REDIS_URL", "ConsumerSettings", "SupervisorSettings", "lease_name"]

DAY = 86_400.0


def lease_name(stream: str, consumer: str) -> str:
    """The store lease a consumer's worker holds: one per (stream, consumer)."""
    return f"consumer:{stream}:{consumer}"


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """One SDK consumer process's settings (the job worker's are ``worker.WorkerSettings``)."""

    db_url: str
    redis_url: str = DEFAULT_REDIS_URL
    batch_size: int = 100  # max events per XREAD
    events_per_transaction: int = 100  # events sharing a commit (1: one each, as the seed)
    block_ms: int = 1_000  # XREAD BLOCK: how long an idle read waits
    lease_duration: float = 30.0
    lease_renewal: float = 25.0  # renew after this many seconds
    cleanup_retention: float = 7 * DAY  # keep dedup records this long
    cleanup_interval: float = 300.0
    cleanup_batch_size: int = 1_000
    heartbeat_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.events_per_transaction < 1:
            raise ValueError("batch size and events per transaction must be at least 1")
        if not 0 < self.lease_renewal < self.lease_duration:
            raise ValueError("the lease renewal must come before the lease expires")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ConsumerSettings:
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    worker: ConsumerSettings
    poll_interval: float = 5.0  # seconds between spawn passes (quarantine release seen)
    heartbeat_dir: Path = Path("/tmp/headwater/consumer-heartbeats")
    heartbeat_timeout: float = 30.0  # kill a worker silent for this long
    graceful_shutdown_timeout: float = 30.0  # SIGTERM, then SIGKILL after this
    max_crashes: int = 5  # crashes within crash_window quarantine the consumer
    crash_window: float = 60.0
    healthy_run: float = 60.0  # a worker that lived this long clears its crash history
    lag_interval: float = 10.0  # how often lag_events_count is computed
    metrics_port: int | None = None
    only: tuple[str, ...] = ()  # run only these registrations (names)
