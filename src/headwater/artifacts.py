"""Artifacts: the files a step leaves in ``$ARTIFACTS_DIR``, kept per job on disk.

Strøm's semantics: when a step succeeds, every regular file under its artifacts
directory (recursively; a name keeps its slashes) is kept for the job; a failed or
cancelled step's files are dropped. Symbolic links and names with ``..`` or control
characters are skipped with a warning. A file over ``max_file_bytes`` or a job over
``max_job_bytes`` fails the step. A later file of the same name replaces the earlier.

Layout under ``root``: ``<job id>/files/<name>`` and ``<job id>/index.json`` (name ->
step, size, content type, time). Files are written by the process that runs the step
and read by the API of the same machine (``headwater up`` / ``run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import structlog

from headwater.errors import ArtifactError

if TYPE_CHECKING:
    from headwater.store.base import Store

__all__ = ["Artifact", "ArtifactStore"]

log = structlog.get_logger(__name__)

MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_JOB_BYTES = 1024 * 1024 * 1024
_JOB_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    step_name: str
    size_bytes: int
    content_type: str
    created_at: str


class ArtifactStore:
    def __init__(
        self,
        root: Path,
        *,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_job_bytes: int = MAX_JOB_BYTES,
    ) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.max_job_bytes = max_job_bytes

    # -- writing (the worker side) ------------------------------------------------------
    def collect(self, job_id: str, step: str, source: Path) -> list[Artifact]:
        """Keep every regular file under ``source`` for ``job_id``; the kept ones."""
        found = list(_files(source))
        if not found:
            return []
        job_dir = self._job_dir(job_id)
        index = self._index(job_dir)
        total = sum(a.size_bytes for n, a in index.items() if n not in {x for x, _ in found})
        kept: list[Artifact] = []
        now = datetime.now(UTC).isoformat()
        for name, path in found:
            size = path.stat().st_size
            if size > self.max_file_bytes:
                raise ArtifactError(
                    f"artifact {name!r} is {size} bytes, over the {self.max_file_bytes}-byte"
                    " limit for one file"
                )
            total += size
            if total > self.max_job_bytes:
                raise ArtifactError(
                    f"the job's artifacts are over the {self.max_job_bytes}-byte limit"
                )
            kept.append(Artifact(name, step, size, _content_type(name), now))
        for artifact, (_, path) in zip(kept, found, strict=True):
            target = job_dir / "files" / artifact.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            index[artifact.name] = artifact
        self._write_index(job_dir, index)
        return kept

    # -- reading (the API side) -----------------------------------------------------------
    def artifacts_of(self, job_id: str) -> list[Artifact]:
        if not _JOB_ID.match(job_id):
            return []
        return sorted(self._index(self.root / job_id).values(), key=lambda a: a.name)

    def open(self, job_id: str, name: str) -> tuple[Artifact, Path] | None:
        """The artifact ``name`` of ``job_id`` and its file, or None."""
        artifact = {a.name: a for a in self.artifacts_of(job_id)}.get(name)
        if artifact is None:
            return None
        path = self.root / job_id / "files" / artifact.name
        return (artifact, path) if path.is_file() else None

    def delete(self, job_id: str) -> None:
        if _JOB_ID.match(job_id):
            shutil.rmtree(self.root / job_id, ignore_errors=True)

    async def sweep(self, store: Store, batch: int = 500) -> int:
        """Delete the artifacts of jobs the store no longer has (retention deleted them:
        artifacts live as long as their job); how many jobs' artifacts went."""
        ids = await asyncio.to_thread(self._job_ids)
        removed = 0
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            known = {job.id for job in await store.get_jobs(chunk)}
            for job_id in chunk:
                if job_id not in known:
                    await asyncio.to_thread(self.delete, job_id)
                    removed += 1
        return removed

    async def run_sweep(self, store: Store, stop: asyncio.Event, interval: float = 300.0) -> None:
        """:meth:`sweep` now and every ``interval`` seconds until ``stop``."""
        while not stop.is_set():
            try:
                removed = await self.sweep(store)
                if removed:
                    log.info("artifacts_swept", jobs=removed)
            except Exception:
                log.exception("artifact_sweep_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def _job_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _JOB_ID.match(p.name))

    def _job_dir(self, job_id: str) -> Path:
        if not _JOB_ID.match(job_id):
            raise ArtifactError(f"not a job id: {job_id!r}")
        return self.root / job_id

    @staticmethod
    def _index(job_dir: Path) -> dict[str, Artifact]:
        try:
            data = json.loads((job_dir / "index.json").read_text())
        except FileNotFoundError:
            return {}
        return {name: Artifact(**fields) for name, fields in data.items()}

    @staticmethod
    def _write_index(job_dir: Path, index: dict[str, Artifact]) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=job_dir, prefix=".index-")
        with os.fdopen(fd, "w") as f:
            json.dump({name: asdict(a) for name, a in index.items()}, f)
        os.replace(tmp, job_dir / "index.json")  # readers never see half an index


def _files(source: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                dirnames.remove(d)
                log.warning("artifact_skipped", name=d, reason="symbolic link")
        for filename in sorted(filenames):
            path = here / filename
            name = path.relative_to(source).as_posix()
            if path.is_symlink() or not path.is_file():
                log.warning("artifact_skipped", name=name, reason="not a regular file")
                continue
            if _CONTROL.search(name) or ".." in PurePosixPath(name).parts:
                log.warning("artifact_skipped", name=repr(name), reason="unsafe name")
                continue
            found.append((name, path))
    return sorted(found)


def _content_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"
