"""``/healthz`` and ``/metrics``: open to load balancers and Prometheus (no API key)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from headwater.server.metrics import LIVE_STATUSES, Metrics
from headwater.server.routes_common import RuntimeDep

__all__ = ["STORE_CHECK_TIMEOUT", "ops_router"]

log = structlog.get_logger(__name__)

# A store that hangs is as unhealthy as one that fails; a load balancer's own timeout
# is typically a few seconds.
STORE_CHECK_TIMEOUT = 5.0


def ops_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(
        "/healthz",
        summary="Liveness and store reachability",
        responses={503: {"description": "The store check failed."}},
    )
    async def healthz(runtime: RuntimeDep) -> JSONResponse:
        try:
            components: dict[str, Any] = dict(runtime.health())
        except Exception as exc:
            log.warning("health_report_failed", error=type(exc).__name__)
            components = {"runtime": "error"}
        try:
            # Pending and running only: an index range each, where counting every job
            # read a million index entries per probe (373 ms of CPU on SQLite).
            await asyncio.wait_for(
                runtime.store.count_jobs_by_status(LIVE_STATUSES), STORE_CHECK_TIMEOUT
            )
            store_state = "ok"
        except TimeoutError:
            store_state = "error: timeout"
        except Exception as exc:
            log.warning("health_store_check_failed", error=type(exc).__name__)
            store_state = f"error: {type(exc).__name__}"
        ok = store_state == "ok"
        components.pop("status", None)
        # Our own store check wins over whatever the runtime reported for the store.
        body = {"status": "ok" if ok else "error", **components, "store": store_state}
        return JSONResponse(runtime.redact(body), status_code=200 if ok else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        registry: Metrics = request.app.state.metrics
        return Response(await registry.render(), media_type=registry.content_type)

    return router
