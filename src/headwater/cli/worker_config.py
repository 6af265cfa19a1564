"""``worker-config.yaml``: the settings file of ``headwater worker --config``."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from headwater.errors import ConfigError

__all__ = ["WorkerConfig", "load_worker_config"]


class WorkerConfig(BaseModel):
    """worker-config.yaml (the seed's ``worker_token`` and ``tags``, and a few more)."""

    model_config = ConfigDict(extra="forbid")

    server: str | list[str] | None = None
    worker_token: str | None = None
    tags: list[str] | None = None  # default: the runners' tags (script, docker, pod)
    concurrency: int = Field(default=8, ge=1, le=1000)
    name: str | None = None
    cache_dir: str | None = None
    heartbeat_interval: float = Field(default=2.0, gt=0, le=60)


def load_worker_config(path: Path) -> WorkerConfig:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the worker config: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the worker config must be a mapping of keys to values")
    try:
        return WorkerConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        known = ", ".join(WorkerConfig.model_fields)
        raise ConfigError(f"{path}: {problems} (known keys: {known})") from None
