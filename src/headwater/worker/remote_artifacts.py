"""A remote worker's artifacts: packed and sent to its server, which keeps them.

The step's ``$ARTIFACTS_DIR`` is packed as a tar.gz of its regular files (symbolic links
and other special files are left out, as the server's ``ArtifactStore`` would) and
POSTed to ``/worker/artifacts/{job}/{step}`` with the worker's token. A folder over
``max_bytes`` (the server's request limit keeps it below 64 MiB) fails the step with
that reason before anything is sent; the server applies its own per-file and per-job
limits and answers what it refused, which fails the step the same way.
"""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from pathlib import Path
from typing import Protocol

from headwater.errors import ArtifactError, HeadwaterError

__all__ = ["MAX_UPLOAD_BYTES", "RemoteArtifacts", "pack"]

MAX_UPLOAD_BYTES = 60 * 1024 * 1024


class _Uploader(Protocol):
    async def upload_artifacts(self, job_id: str, step: str, archive: bytes) -> int: ...


class RemoteArtifacts:
    """An ``ArtifactKeeper`` that sends the files to the server."""

    def __init__(self, uploader: _Uploader, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self._uploader = uploader
        self._max_bytes = max_bytes

    async def keep(self, job_id: str, step: str, folder: Path) -> int:
        archive = await asyncio.to_thread(pack, folder, self._max_bytes)
        try:
            return await self._uploader.upload_artifacts(job_id, step, archive)
        except HeadwaterError as exc:
            raise ArtifactError(f"the server did not keep them: {exc}") from exc


def pack(folder: Path, max_bytes: int) -> bytes:
    """The regular files under ``folder`` as a tar.gz; ArtifactError over ``max_bytes``."""
    total = 0
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for dirpath, dirnames, filenames in os.walk(folder):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
            for name in sorted(filenames):
                path = here / name
                if path.is_symlink() or not path.is_file():
                    continue
                total += path.stat().st_size
                if total > max_bytes:
                    raise ArtifactError(
                        f"the step's artifacts are over the {max_bytes}-byte limit of an upload"
                    )
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()
