"""Per-step scratch directories for the variables Strøm scripts write to.

Strøm gives every shell step ``$ARTIFACTS_DIR`` (files to keep) and ``$STATE_DIR`` /
``$STATE_OUT_DIR`` (task state between runs), plus the workspace-wide ``GLOBAL_*``
pair. A local step gets each as an empty directory of its own, removed when the step ends
(never unset: ``cp report.html "$ARTIFACTS_DIR/"`` would then write into ``/``). What a
succeeded step leaves in ``$ARTIFACTS_DIR`` is kept (:mod:`headwater.artifacts`, on
this machine or, for a remote worker, on its server); the state folders hold the task
state (:mod:`headwater.engine.task_state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import structlog

from headwater.artifacts import ArtifactStore
from headwater.errors import ArtifactError
from headwater.runners.base import StepSpec

__all__ = [
    "SCRATCH_VARIABLES",
    "ArtifactKeeper",
    "LocalArtifacts",
    "container_dirs",
    "host_dirs",
    "keep_artifacts",
    "scratch_dirs",
]

log = structlog.get_logger(__name__)

# Variable -> directory name under the step's scratch root.
SCRATCH_VARIABLES: dict[str, str] = {
    "ARTIFACTS_DIR": "artifacts",
    "STATE_DIR": "state",
    "STATE_OUT_DIR": "state-out",
    "GLOBAL_STATE_DIR": "global-state",
    "GLOBAL_STATE_OUT_DIR": "global-state-out",
}


# Where a container finds them (Strøm's mount points).
CONTAINER_PATHS: dict[str, str] = {
    "ARTIFACTS_DIR": "/artifacts",
    "STATE_DIR": "/state",
    "STATE_OUT_DIR": "/state-out",
    "GLOBAL_STATE_DIR": "/global-state",
    "GLOBAL_STATE_OUT_DIR": "/global-state-out",
}
_COPIED_OUT = ("ARTIFACTS_DIR", "STATE_OUT_DIR", "GLOBAL_STATE_OUT_DIR")


@contextlib.contextmanager
def container_dirs(spec: StepSpec) -> Iterator[StepSpec]:
    """``spec`` of a container step with the folders at Strøm's paths inside the
    container: each starts as a host folder (the state ones filled before the step) that
    the runner copies in, and the output ones are copied back out after the step."""
    root = Path(tempfile.mkdtemp(prefix="headwater-step-"))
    try:
        env = dict(spec.env)
        copy_in: list[tuple[str, Path]] = []
        copy_out: list[tuple[str, Path]] = []
        for variable, name in SCRATCH_VARIABLES.items():
            path = root / name
            path.mkdir()
            env[variable] = CONTAINER_PATHS[variable]
            copy_in.append((CONTAINER_PATHS[variable], path))
            if variable in _COPIED_OUT:
                copy_out.append((CONTAINER_PATHS[variable], path))
        yield dataclasses.replace(spec, env=env, copy_in=tuple(copy_in), copy_out=tuple(copy_out))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def host_dirs(spec: StepSpec) -> dict[str, str]:
    """Variable -> the host folder behind it (a container step's, or a local step's)."""
    if spec.copy_in:
        by_path = {p: v for v, p in CONTAINER_PATHS.items()}
        return {by_path[c]: str(h) for c, h in (*spec.copy_in, *spec.copy_out) if c in by_path}
    return {v: spec.env[v] for v in SCRATCH_VARIABLES if spec.env.get(v)}


@contextlib.contextmanager
def scratch_dirs(spec: StepSpec) -> Iterator[StepSpec]:
    """``spec`` with each of :data:`SCRATCH_VARIABLES` set to a fresh empty directory
    (unless the action sets it itself); the directories are removed afterwards."""
    missing = {k: v for k, v in SCRATCH_VARIABLES.items() if not spec.env.get(k)}
    if not missing:
        yield spec
        return
    root = Path(tempfile.mkdtemp(prefix="headwater-step-"))
    try:
        env = dict(spec.env)
        for variable, name in missing.items():
            path = root / name
            path.mkdir()
            env[variable] = str(path)
        yield dataclasses.replace(spec, env=env)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class ArtifactKeeper(Protocol):
    """Where a worker keeps a step's artifacts: its own disk, or its server's."""

    async def keep(self, job_id: str, step: str, folder: Path) -> int:
        """Keep the files under ``folder``; how many. Raises ArtifactError."""
        ...


class LocalArtifacts:
    """Kept on this machine's disk (``up``, ``run --artifacts-dir``, a server's worker)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    async def keep(self, job_id: str, step: str, folder: Path) -> int:
        return len(await asyncio.to_thread(self.store.collect, job_id, step, folder))


async def keep_artifacts(
    keeper: ArtifactKeeper | None, job_id: str, step: str, spec: StepSpec
) -> str | None:
    """Keep the files a succeeded step left in its ``$ARTIFACTS_DIR``; the reason the
    step fails instead, or None."""
    folder = host_dirs(spec).get("ARTIFACTS_DIR")
    if not folder or not await asyncio.to_thread(_has_files, Path(folder)):
        return None
    if keeper is None:
        return (
            "the step wrote artifacts, but this worker keeps none (artifacts are kept by"
            " `headwater up`, `headwater server` and by `headwater run --artifacts-dir DIR`)"
        )
    try:
        count = await keeper.keep(job_id, step, Path(folder))
    except (ArtifactError, OSError) as exc:
        return f"artifacts not kept: {exc}"
    log.info("artifacts_kept", job_id=job_id, step=step, count=count)
    return None


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())
