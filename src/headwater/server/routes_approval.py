"""``/api/jobs/{id}/steps/{step}/approve`` and ``/reject``: decide an approval step.

Strøm takes one endpoint with ``{"approved": bool, "input", "rejection_reason"}``;
``/approve`` accepts that body as is (``approved: false`` rejects), and ``/reject`` takes
``{"reason"}``. The approver recorded is the API key's owner when the server knows one,
else the ``approver`` given in the body, else "api".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.params import Depends
from pydantic import BaseModel, Field

from headwater.engine.approval import MAX_REASON_CHARS, decide
from headwater.server.json_shapes import job_json
from headwater.server.routes_common import ERRORS_404, ERRORS_409, ERRORS_422, JobOut, RuntimeDep
from headwater.server.routes_jobs import resolve_job_id

__all__ = ["approval_router"]

_Name = Annotated[str, Field(min_length=1, max_length=200)]


class ApproveIn(BaseModel):
    approved: bool = True
    input: dict[str, Any] | None = None
    rejection_reason: Annotated[str, Field(max_length=MAX_REASON_CHARS)] | None = None
    approver: _Name | None = None


class RejectIn(BaseModel):
    reason: Annotated[str, Field(max_length=MAX_REASON_CHARS)] | None = None
    approver: _Name | None = None


def approval_router(dependencies: Sequence[Depends] = ()) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["jobs"], dependencies=list(dependencies))

    async def _decide(
        runtime: RuntimeDep,
        job_id: str,
        step: str,
        approved: bool,
        approver: str | None,
        given: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        job_id = await resolve_job_id(runtime.store, job_id)
        job = await decide(
            runtime.store,
            runtime.workspace(),
            job_id,
            step,
            approved=approved,
            approver=approver or "api",
            given=given,
            reason=reason,
        )
        data: dict[str, Any] = runtime.redact(job_json(job, include_steps=True))
        return data

    @router.post(
        "/jobs/{job_id}/steps/{step}/approve",
        response_model=JobOut,
        responses={**ERRORS_404, **ERRORS_409, **ERRORS_422},
        summary="Approve a waiting approval step (or reject it with approved: false)",
        description="The step completes with output ``{approval_message, approved, "
        "approved_by, approved_at, input}`` and the job resumes on a worker. 409 when the "
        "step is not waiting; 422 when the action's required input fields are missing.",
    )
    async def approve(
        job_id: str, step: str, runtime: RuntimeDep, body: ApproveIn | None = None
    ) -> dict[str, Any]:
        body = body or ApproveIn()
        return await _decide(
            runtime,
            job_id,
            step,
            body.approved,
            body.approver,
            given=body.input,
            reason=body.rejection_reason,
        )

    @router.post(
        "/jobs/{job_id}/steps/{step}/reject",
        response_model=JobOut,
        responses={**ERRORS_404, **ERRORS_409},
        summary="Reject a waiting approval step",
        description="The step fails with the reason; then as for any failed step "
        "(``continue_on_failure``, skipped dependents, ``on_error`` hooks).",
    )
    async def reject(
        job_id: str, step: str, runtime: RuntimeDep, body: RejectIn | None = None
    ) -> dict[str, Any]:
        body = body or RejectIn()
        return await _decide(runtime, job_id, step, False, body.approver, reason=body.reason)

    return router
