"""``/api/jobs/{id}/artifacts``: the files a job's steps left in ``$ARTIFACTS_DIR``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.params import Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel

from headwater.artifacts import ArtifactStore
from headwater.errors import NotFoundError
from headwater.server.routes_common import ERRORS_404, RuntimeDep
from headwater.server.runtime import Runtime

__all__ = ["artifacts_router"]

# Shown in a browser tab; anything else (HTML and SVG included: they could run
# scripts) is downloaded.
_INLINE = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}
)


class ArtifactOut(BaseModel):
    name: str
    step_name: str
    size_bytes: int
    content_type: str
    created_at: str
    url: str


def artifacts_router(dependencies: Sequence[Depends] = ()) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["jobs"], dependencies=list(dependencies))

    @router.get(
        "/jobs/{job_id}/artifacts",
        response_model=list[ArtifactOut],
        responses=ERRORS_404,
        summary="A job's artifacts",
        description="A JSON array, as Strøm's; each ``url`` (relative) downloads the file.",
    )
    async def list_artifacts(job_id: str, runtime: RuntimeDep) -> list[dict[str, Any]]:
        await _job_or_404(runtime, job_id)
        store = _store(runtime)
        kept = store.artifacts_of(job_id) if store is not None else []
        return [
            {**dataclasses.asdict(a), "url": f"/api/jobs/{job_id}/artifacts/{quote(a.name)}"}
            for a in kept
        ]

    @router.get(
        "/jobs/{job_id}/artifacts/{name:path}",
        response_class=FileResponse,
        responses=ERRORS_404,
        summary="Download one artifact",
    )
    async def get_artifact(job_id: str, name: str, runtime: RuntimeDep) -> FileResponse:
        await _job_or_404(runtime, job_id)
        store = _store(runtime)
        found = store.open(job_id, name) if store is not None else None
        if found is None:
            raise NotFoundError(f"job {job_id!r} has no artifact {name!r}")
        artifact, path = found
        inline = artifact.content_type in _INLINE
        return FileResponse(
            path,
            media_type=artifact.content_type if inline else "application/octet-stream",
            filename=artifact.name.rsplit("/", 1)[-1],
            content_disposition_type="inline" if inline else "attachment",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    return router


def _store(runtime: Runtime) -> ArtifactStore | None:
    # Only a runtime whose steps run here (``up``) keeps artifacts.
    store = getattr(runtime, "artifacts", None)
    return store if isinstance(store, ArtifactStore) else None


async def _job_or_404(runtime: Runtime, job_id: str) -> None:
    if await runtime.store.get_job(job_id) is None:
        raise NotFoundError(f"job {job_id!r} not found")
