"""``/api/dead-letters``: events that could not become jobs, and their replay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.params import Depends
from pydantic import BaseModel, ConfigDict, Field

from headwater.dispatch.dispatcher import Dispatcher
from headwater.sdk.dead_letters import replay_dead_letters
from headwater.server.json_shapes import rejected_json
from headwater.server.routes_common import RuntimeDep

__all__ = ["ReplayIn", "dead_letters_router"]


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Bounded: a larger integer than the stores' 64-bit ids was a 500 (found by fuzzing).
    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(min_length=1, max_length=10_000)
    input: dict[str, Any] | None = Field(
        default=None, description="Replaces the stored payload (to correct a bad event)."
    )


def dead_letters_router(dependencies: Sequence[Depends] = ()) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["dead letters"], dependencies=list(dependencies))

    @router.get("/dead-letters", summary="Rejected events, newest first")
    async def list_dead_letters(
        runtime: RuntimeDep,
        source_id: Annotated[str | None, Query(description="Only this trigger's.")] = None,
        pending: Annotated[bool, Query(description="Leave out replayed ones.")] = False,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        records = await runtime.store.list_rejected(source_id, limit, pending_only=pending)
        data: list[dict[str, Any]] = runtime.redact([rejected_json(r) for r in records])
        return data

    @router.post("/dead-letters/replay", summary="Dispatch dead letters again as jobs")
    async def replay(body: ReplayIn, runtime: RuntimeDep) -> list[dict[str, Any]]:
        dispatcher = Dispatcher(runtime.store, runtime.workspace)
        outcomes = await replay_dead_letters(runtime.store, dispatcher, body.ids, body.input)
        return [o.to_api() for o in outcomes]

    return router
