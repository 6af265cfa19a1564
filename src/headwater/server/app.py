"""The FastAPI app factory.

``create_app`` builds a new app around a ``Runtime``: no module-level app, router or
registry, so a process (or a test) can build as many as it wants. Other routers
(``/hooks``, ``/worker``) are added afterwards with ``app.include_router``; a router
mounted under ``/api`` is covered by the API-key check automatically (it is a path-prefix
middleware) and every router inherits the error handlers below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from fastapi_offline import FastAPIOffline
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headwater import __version__
from headwater.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    HeadwaterError,
    IdempotencyKeyReusedError,
    InputValidationError,
    JsonValueError,
    NotFoundError,
    RunnerError,
    StaleConsumerError,
    StoreError,
    TemplateError,
    WorkspaceError,
)
from headwater.server.auth import ApiKeyMiddleware, validate_api_keys
from headwater.server.metrics import (
    Metrics,
    RequestMetricsMiddleware,
    job_status_refresher,
    paused_refresher,
    store_size_refresher,
    trigger_state_refresher,
)
from headwater.server.routes_approval import approval_router
from headwater.server.routes_artifacts import artifacts_router
from headwater.server.routes_common import error_response
from headwater.server.routes_dead_letters import dead_letters_router
from headwater.server.routes_flow import flow_router
from headwater.server.routes_jobs import jobs_router
from headwater.server.routes_ops import ops_router
from headwater.server.routes_state import state_router
from headwater.server.routes_tasks import tasks_router
from headwater.server.routes_triggers import triggers_router
from headwater.server.routes_workflows import workflows_router
from headwater.server.runtime import Runtime, TriggerStateProvider
from headwater.server.strict_json import StrictJsonMiddleware
from headwater.telemetry.job_metrics import JobMetrics

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DOCS_ASSETS",
    "BodyLimitMiddleware",
    "create_app",
    "error_status",
]

log = structlog.get_logger(__name__)

DEFAULT_MAX_BODY_BYTES = 1_048_576
DOCS_ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's scripts, served by the server itself

# Most specific first: the first class the error is an instance of decides.
_ERROR_MAP: tuple[tuple[type[HeadwaterError], int, str], ...] = (
    (AuthError, 401, "unauthorized"),
    (StaleConsumerError, 409, "stale_consumer"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (InputValidationError, 422, "invalid_input"),
    (JsonValueError, 422, "invalid_json"),
    (IdempotencyKeyReusedError, 422, "idempotency_key_reused"),
    (WorkspaceError, 422, "invalid_workspace"),
    (TemplateError, 400, "template_error"),
    (ConfigError, 400, "config_error"),
    (StoreError, 500, "store_error"),
    (RunnerError, 500, "runner_error"),
)

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def create_app(
    runtime: Runtime,
    *,
    api_keys: Sequence[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """A new headwater HTTP app serving ``runtime``.

    ``api_keys``: when non-empty, every ``/api/*`` request needs ``Authorization: Bearer
    <one of them>``. ``max_body_bytes``: larger request bodies get 413; a router added
    later may set a limit for its prefix in ``app.state.body_limits``.
    """
    validate_api_keys(api_keys)
    metrics = Metrics()
    job_metrics = getattr(runtime, "job_metrics", None)
    if isinstance(job_metrics, JobMetrics):
        metrics.include(job_metrics)
    metrics.on_scrape(job_status_refresher(metrics, runtime.store))
    metrics.on_scrape(store_size_refresher(metrics, runtime.store))
    metrics.on_scrape(paused_refresher(metrics, runtime.store))
    if isinstance(runtime, TriggerStateProvider):
        metrics.on_scrape(trigger_state_refresher(metrics, runtime.trigger_states))

    # /docs and /redoc load their scripts from files of the fastapi-offline package, not
    # from a CDN: they work on a machine without internet access, and the browser fetches
    # nothing from a third party. No validator badge either (it calls swagger.io).
    app = FastAPIOffline(
        title="headwater",
        version=__version__,
        description="Event-driven job orchestrator: jobs, logs, tasks and triggers.",
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    # Path prefix -> body limit, read on every request: a router added later sets its
    # own (``app.state.body_limits["/hooks"] = n``); the longest matching prefix wins.
    body_limits: dict[str, int] = {"/": max_body_bytes}
    app.state.body_limits = body_limits

    # The bearer scheme only documents the key in the OpenAPI schema (the "Authorize"
    # button of /docs); ApiKeyMiddleware does the checking.
    api_deps = [Depends(HTTPBearer(auto_error=False))] if api_keys else []
    app.include_router(jobs_router(api_deps))
    app.include_router(approval_router(api_deps))
    app.include_router(artifacts_router(api_deps))
    app.include_router(tasks_router(api_deps))
    app.include_router(state_router(api_deps))
    app.include_router(triggers_router(api_deps))
    app.include_router(flow_router(api_deps))
    app.include_router(dead_letters_router(api_deps))
    app.include_router(workflows_router(api_deps))
    app.include_router(ops_router())

    _install_error_handlers(app)
    # Starlette runs the middleware added last first: metrics wraps auth, so rejected
    # requests are counted too.
    app.add_middleware(StrictJsonMiddleware)  # inside the body limit: reads a bounded body
    app.add_middleware(BodyLimitMiddleware, limits=body_limits)
    app.add_middleware(ApiKeyMiddleware, keys=tuple(api_keys))
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app


class BodyLimitMiddleware:
    """413 for request bodies over the limit of their path prefix.

    A declared ``Content-Length`` over the limit is refused before anything is read; a
    chunked body is counted as it is read and refused as soon as it passes the limit
    (FastAPI re-raises an HTTPException raised while it reads the body, so the error
    handler answers with the usual JSON error).
    """

    def __init__(self, app: ASGIApp, limits: Mapping[str, int]) -> None:
        self.app = app
        self.limits = limits

    def _limit_for(self, path: str) -> int | None:
        best: tuple[int, int] | None = None
        for prefix, limit in self.limits.items():
            if path.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), limit)
        return best[1] if best else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self._limit_for(scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(413, "payload_too_large", _too_large(limit))
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise StarletteHTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counting_receive, send)


def _too_large(limit: int) -> str:
    return f"the request body is larger than the limit of {limit} bytes"


def error_status(exc: HeadwaterError) -> tuple[int, str]:
    """The HTTP status and error type of a headwater error."""
    for cls, status, type_ in _ERROR_MAP:
        if isinstance(exc, cls):
            return status, type_
    return 400, "error"


def _redact(request: Request, data: Any) -> Any:
    runtime: Runtime = request.app.state.runtime
    return runtime.redact(data)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_headwater_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HeadwaterError)
        status, type_ = error_status(exc)
        details: Any = None
        if status >= 500:
            # Store and runner messages can carry SQL, paths or values: log them, answer
            # with their kind only.
            log.error(
                "api_error", error_type=type(exc).__name__, path=request.url.path, exc_info=exc
            )
            message = f"internal error ({type_}); see the server log"
        else:
            message = str(exc)
            if isinstance(exc, InputValidationError):
                details = {"task": exc.task, "reasons": list(exc.reasons)}
            elif isinstance(exc, WorkspaceError):
                details = {"problems": [p.to_dict() for p in exc.problems]}
        return error_response(status, type_, _redact(request, message), _redact(request, details))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Only where and what: pydantic's "input" would echo the request (maybe secrets).
        problems: list[dict[str, Any]] = []
        summary: list[str] = []
        for err in exc.errors():
            loc = [str(part) for part in err.get("loc", ())]
            msg = str(err.get("msg", ""))
            problems.append({"loc": loc, "msg": msg, "type": str(err.get("type", ""))})
            summary.append(f"{'.'.join(loc)}: {msg}")
        message = "invalid request: " + "; ".join(summary)
        return error_response(
            422, "invalid_request", _redact(request, message), _redact(request, problems)
        )

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else type_.replace("_", " ")
        return error_response(
            exc.status_code, type_, _redact(request, message), headers=exc.headers
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("api_unexpected_error", path=request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal error; see the server log")

    app.add_exception_handler(HeadwaterError, on_headwater_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
