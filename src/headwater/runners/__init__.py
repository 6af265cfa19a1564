"""headwater.runners: what runs a step — local processes, Docker containers, pods.

``open_runners`` returns the runners this process offers (``RunnersConfig.from_env``
decides which, see ``headwater.runners.config``) and removes what dead workers of this
host left behind; ``runner_tags`` are the worker tags they stand for (``script`` for
local, ``docker``, ``pod``). The SDKs are imported only when their runner is offered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from headwater.workspace.models import RunnerKind

if TYPE_CHECKING:
    from headwater.runners.base import Runner
    from headwater.runners.config import RunnersConfig

__all__ = ["RUNNER_TAGS", "close_runners", "open_runners", "runner_tags"]

log = structlog.get_logger(__name__)

RUNNER_TAGS: Mapping[RunnerKind, str] = {
    RunnerKind.LOCAL: "script",
    RunnerKind.DOCKER: "docker",
    RunnerKind.POD: "pod",
}
_SWEEP_TIMEOUT = 10.0  # an engine that does not answer at start must not hold the worker


async def open_runners(config: RunnersConfig | None = None) -> dict[RunnerKind, Runner]:
    """The runners to offer, ready to use. An engine that is configured but does not
    answer still gets its runner (its steps fail with the reason until it answers);
    the failed orphan sweep is logged."""
    from headwater.runners.config import RunnersConfig
    from headwater.runners.local import LocalRunner

    config = config or RunnersConfig.from_env()
    runners: dict[RunnerKind, Runner] = {}
    if RunnerKind.LOCAL in config.kinds:
        runners[RunnerKind.LOCAL] = LocalRunner()
    if RunnerKind.DOCKER in config.kinds:
        from headwater.runners.docker import DockerRunner

        docker = DockerRunner(config.docker)
        await _sweep("docker", docker.sweep_orphans(), config.docker.where)
        runners[RunnerKind.DOCKER] = docker
    if RunnerKind.POD in config.kinds:
        from headwater.runners.pod import PodRunner

        pods = PodRunner(config.kube)
        await _sweep("pod", pods.sweep_orphans(), config.kube.where)
        runners[RunnerKind.POD] = pods
    log.info("runners_offered", runners=sorted(kind.value for kind in runners))
    for kind, reason in sorted(config.not_offered.items()):
        log.info("runner_not_offered", runner=kind.value, reason=reason)
    return runners


async def _sweep(kind: str, sweep: Coroutine[Any, Any, int], where: str) -> None:
    try:
        removed = await asyncio.wait_for(sweep, _SWEEP_TIMEOUT)
    except Exception as exc:
        log.warning("orphan_sweep_failed", runner=kind, engine=where, error=str(exc))
        return
    if removed:
        log.warning("orphans_removed", runner=kind, engine=where, count=removed)


async def close_runners(runners: Mapping[RunnerKind, Runner]) -> None:
    for runner in runners.values():
        close = getattr(runner, "aclose", None)
        if close is not None:
            await close()


def runner_tags(runners: Mapping[RunnerKind, object]) -> frozenset[str]:
    """The worker tags a process with these runners can serve."""
    return frozenset(RUNNER_TAGS[kind] for kind in runners)
