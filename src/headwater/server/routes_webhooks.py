"""Webhook triggers: ``POST /hooks/{name}`` turns a JSON body into one job.

Per request, in this order (so an unauthenticated caller learns nothing about parsing):
1. the hook: the enabled webhook trigger whose ``name`` (or, unset, key) is ``{name}``,
   else 404;
2. the body, read from the stream and refused with 413 as soon as it passes the hook's
   ``max_body_bytes`` (never buffered past the limit);
3. the secret, when set (templated, ``{{ secret.x }}``): ``Authorization: Bearer``, a
   GitHub-style ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body>`` (also
   ``X-Headwater-Signature-256``), or Strøm's ``?secret=`` query parameter, which works
   but leaks the secret into proxy and access logs; compared in constant time; else 401;
4. the body as the job input: a JSON object (empty body: ``{}``), else 422; the trigger's
   ``input`` defaults are merged by the dispatcher (body fields win);
5. the event goes to the dispatcher: ``Idempotency-Key`` makes it the dedup key (a repeat
   answers 200 with the first job), an invalid input answers 422 (stored as rejected).

``?wait=true`` or ``mode: sync`` waits (woken by ``Channel.FINISHED``, no polling) up to
``timeout_secs`` or ``?timeout=`` (at most 300 s) for the job to be final: 200 with its
output, or 202 with ``timed_out: true``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from headwater import jsonsafe
from headwater.dispatch.dispatcher import DispatchStatus, Event
from headwater.errors import HeadwaterError, InputValidationError, JsonValueError
from headwater.server.routes_common import error_response
from headwater.server.webhook_request import request_input
from headwater.store.base import Channel, JobRecord, Subscription
from headwater.triggers.context import TriggerContext, refreshed_workspace, secret_context
from headwater.workspace.models import WebhookInputShape, WebhookMode, WebhookTrigger, Workspace
from headwater.workspace.secret_refs import seal

__all__ = [
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_WAIT_SECONDS",
    "PAUSED_RETRY_AFTER_SECS",
    "SIGNATURE_HEADERS",
    "SOURCE_TYPE",
    "create_webhook_router",
    "find_webhook",
    "max_webhook_body_bytes",
    "sign_body",
    "webhook_dedup_key",
]

log = structlog.get_logger(__name__)

SOURCE_TYPE = "webhook"
MAX_WAIT_SECONDS = 300.0
MAX_IDEMPOTENCY_KEY_LENGTH = 200
PAUSED_RETRY_AFTER_SECS = 30  # a paused webhook's 503 asks the sender to retry after this
SIGNATURE_HEADERS = ("x-hub-signature-256", "x-headwater-signature-256")
_AUTH_HELP = (
    "this webhook requires its secret: send 'Authorization: Bearer <secret>', or sign the raw"
    " body with HMAC-SHA256 and send 'X-Hub-Signature-256: sha256=<hex digest>' (or"
    " 'X-Headwater-Signature-256')"
)


def webhook_dedup_key(workspace: str, trigger: str, idempotency_key: str) -> str:
    return f"{SOURCE_TYPE}:{workspace}/{trigger}:{idempotency_key}"


def sign_body(secret: str, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def find_webhook(ws: Workspace, name: str) -> tuple[str, WebhookTrigger] | None:
    """The enabled webhook trigger served at ``/hooks/{name}``, with its key."""
    for key, trig in ws.triggers.items():
        if isinstance(trig, WebhookTrigger) and trig.enabled and (trig.name or key) == name:
            return key, trig
    return None


def max_webhook_body_bytes(ws: Workspace) -> int:
    """The largest ``max_body_bytes`` of the workspace's webhooks (0 without any).

    An app-wide body limit on ``/hooks`` must be at least this, or it refuses bodies a
    hook allows; each hook's own limit is enforced by the route."""
    sizes = [t.max_body_bytes for t in ws.triggers.values() if isinstance(t, WebhookTrigger)]
    return max(sizes, default=0)


class _Refused(Exception):
    """An early error answer from one of the request's checks."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type_, self.message = status, type_, message
        self.details, self.headers = details, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.type_, self.message, self.details, self.headers)


def create_webhook_router(ctx: TriggerContext) -> APIRouter:
    """``POST /hooks/{name}`` for the webhook triggers of ``ctx.workspace()``."""
    router = APIRouter(tags=["webhooks"])

    @router.api_route(
        "/hooks/{name}",
        methods=["GET", "POST"],
        summary="Start the task of a webhook trigger",
        description=(
            "The JSON object body is the job input (merged over the trigger's input"
            " defaults; with `input_shape: request`, Strøm's {body, headers, method,"
            " query}). GET is accepted, as in Strøm. `?secret=` is accepted for Strøm"
            " compatibility but ends up in access logs: prefer the Authorization or"
            " signature headers."
        ),
    )
    async def fire(request: Request, name: str) -> Response:
        try:
            return await _handle(ctx, request, name)
        except _Refused as refused:
            return refused.response()

    return router


async def _handle(ctx: TriggerContext, request: Request, name: str) -> Response:
    ws = ctx.workspace()
    found = find_webhook(ws, name)
    if found is None:
        raise _Refused(404, "not_found", f"no enabled webhook named {name!r}")
    key, trig = found
    if trig.force_refresh:
        ws = await refreshed_workspace(ctx, key)
        found = find_webhook(ws, name)
        if found is None:
            raise _Refused(404, "not_found", f"no enabled webhook named {name!r}")
        key, trig = found
    body = await _read_body(request, trig.max_body_bytes)
    secret = _render_secret(ctx, key, trig)
    if secret is not None:
        _authenticate(request, body, secret)
    # Paused (``headwater pause trigger``), told only to an authenticated sender.
    paused = getattr(ctx, "paused", None)
    if paused is not None and paused(key):
        # Not an error of the sender: it should send again later (the event is not lost).
        raise _Refused(
            503,
            "paused",
            f"webhook {name!r} is paused; resume it with 'headwater resume trigger {key}'",
            headers={"Retry-After": str(PAUSED_RETRY_AFTER_SECS)},
        )
    payload = (
        request_input(request, body)
        if trig.input_shape is WebhookInputShape.REQUEST
        else _parse_body(body)
    )
    wait, timeout = _wait_options(request, trig)
    dedup_key = _dedup_key(request, ws.name, key)
    try:
        defaults = ctx.templates.render(
            trig.input, secret_context(ctx), where=f"trigger {key!r} input"
        )
    except HeadwaterError as exc:
        log.error("webhook_input_error", hook=name, error=str(exc))
        raise _Refused(500, "webhook_misconfigured", _see_log(name)) from None
    source_id = f"{ws.name}/{key}"
    event = Event(
        target_task=trig.task,
        payload=payload,
        source_type=SOURCE_TYPE,
        source_id=source_id,
        dedup_key=dedup_key,
        # Secret values become references the worker fills in: never stored.
        defaults=seal(defaults, ctx.secrets(), source_id) if isinstance(defaults, Mapping) else {},
    )
    if not wait:
        return _accepted(await _dispatch(ctx, name, event))
    # Subscribe before dispatching: a job that finishes at once must still wake us.
    with ctx.store.subscribe(Channel.FINISHED) as finished:
        accepted = await _dispatch(ctx, name, event)
        return await _wait_for(ctx, finished, accepted, timeout)


def _dedup_key(request: Request, workspace: str, key: str) -> str | None:
    """From ``Idempotency-Key``: a retried delivery then finds the job of the first."""
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is None:
        return None
    if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise _Refused(
            400,
            "bad_request",
            f"the Idempotency-Key header must have 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
        )
    return webhook_dedup_key(workspace, key, idempotency_key)


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = _Refused(
        413, "payload_too_large", f"the request body is larger than the limit of {limit} bytes"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _render_secret(ctx: TriggerContext, key: str, trig: WebhookTrigger) -> str | None:
    if trig.secret is None:
        return None
    try:
        secret = ctx.templates.render(
            trig.secret, secret_context(ctx), where=f"trigger {key!r} secret"
        )
    except HeadwaterError as exc:
        log.error("webhook_secret_error", trigger=key, error=str(exc))
        raise _Refused(500, "webhook_misconfigured", _see_log(key)) from None
    if not isinstance(secret, str) or not secret:
        # An empty secret would let an empty bearer token in: refuse instead.
        log.error("webhook_secret_empty", trigger=key)
        raise _Refused(500, "webhook_misconfigured", _see_log(key))
    return secret


def _see_log(name: str) -> str:
    return f"webhook {name!r} is misconfigured; see the server log"


def _authenticate(request: Request, body: bytes, secret: str) -> None:
    """Accept a bearer token, a body signature or ``?secret=``; 401 otherwise."""
    expected = secret.encode()
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected):
        return
    signature = sign_body(secret, body).encode()
    for header in SIGNATURE_HEADERS:
        given = request.headers.get(header)
        # Hex digits in either case (GitHub sends lowercase).
        if given is not None and hmac.compare_digest(given.strip().lower().encode(), signature):
            return
    query_secret = request.query_params.get("secret")
    if query_secret is not None and hmac.compare_digest(query_secret.encode(), expected):
        return
    # The message names the accepted headers, never the secret or what was sent.
    raise _Refused(401, "unauthorized", _AUTH_HELP, headers={"WWW-Authenticate": "Bearer"})


def _parse_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = jsonsafe.loads(body)
    except JsonValueError as exc:
        # Also NaN/Infinity, nesting deeper than jsonsafe.MAX_DEPTH, and strings no store
        # can keep (\u0000, a lone surrogate): refused at the door, never a job.
        raise _Refused(422, "invalid_body", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _Refused(
            422,
            "invalid_body",
            "the body must be a JSON object (its fields become the job's input),"
            f" not a JSON {_json_kind(data)}",
        )
    return data


def _json_kind(data: Any) -> str:
    if isinstance(data, list):
        return "array"
    if isinstance(data, str):
        return "string"
    if isinstance(data, bool):
        return "boolean"
    if data is None:
        return "null"
    return "number"


def _wait_options(request: Request, trig: WebhookTrigger) -> tuple[bool, float]:
    query = request.query_params
    wait_param = query.get("wait")
    wait = trig.mode is WebhookMode.SYNC
    if wait_param is not None:
        wait = wait_param.strip().lower() in ("1", "true", "yes", "on")
    timeout = float(trig.timeout_secs)
    if "timeout" in query:
        try:
            timeout = float(query["timeout"])
        except ValueError:
            raise _Refused(400, "bad_request", "timeout must be a number of seconds") from None
        if not timeout >= 0:  # also refuses NaN
            raise _Refused(400, "bad_request", "timeout must be a number of seconds")
    return wait, min(timeout, MAX_WAIT_SECONDS)


@dataclass(frozen=True, slots=True)
class _Accepted:
    job_id: str | None  # None: held for a debounce/batch, its job comes later
    created: bool
    status: str


async def _dispatch(ctx: TriggerContext, name: str, event: Event) -> _Accepted:
    outcome = await ctx.dispatcher.dispatch_one(event)
    if outcome.status is DispatchStatus.REJECTED:
        redact = _redactor(ctx)
        log.info("webhook_rejected", hook=name, task=event.target_task)
        raise _Refused(
            422,
            "invalid_input",
            redact(outcome.reason or "the input is invalid"),
            details=redact(
                {"task": event.target_task, "reasons": _reasons(ctx, event, outcome.reason)}
            ),
        )
    created = outcome.status in (DispatchStatus.ACCEPTED, DispatchStatus.BUFFERED)
    if outcome.job_id is None or _gathers(ctx, event):  # its job holds other events too
        log.info("webhook_buffered", hook=name, created=created, job_id=outcome.job_id)
        return _Accepted(outcome.job_id, created, "buffered")
    status = "pending"
    if not created:
        job = await ctx.store.get_job(outcome.job_id)
        status = job.status.value if job is not None else status
        if job is not None and job.input != _job_input(ctx, event, job.input):
            # The IETF draft on idempotency keys: a key reused with another payload is
            # refused, never answered with the first delivery's job.
            raise _Refused(
                422,
                "idempotency_key_reused",
                "the Idempotency-Key was already used with a different body; use a new key"
                " for a different request",
            )
    log.info("webhook_received", hook=name, job_id=outcome.job_id, created=created)
    return _Accepted(outcome.job_id, created, status)


def _gathers(ctx: TriggerContext, event: Event) -> bool:
    """The webhook has ``debounce`` or ``batch``: its events share jobs."""
    gatherer = ctx.dispatcher.dispatcher.gatherer
    return (event.source_id or "") in gatherer.plans(ctx.workspace())


def _job_input(ctx: TriggerContext, event: Event, stored: Any) -> Any:
    """The input ``event`` would give its job now (``stored`` when that cannot be told:
    the workspace changed in between)."""
    try:
        return ctx.dispatcher.dispatcher.prepare(event).input
    except HeadwaterError:
        return stored


def _accepted(accepted: _Accepted) -> JSONResponse:
    # 202: a new job was queued; 200: an Idempotency-Key repeat, answered with the first.
    return JSONResponse(
        {"job_id": accepted.job_id, "created": accepted.created, "status": accepted.status},
        status_code=202 if accepted.created else 200,
    )


def _reasons(ctx: TriggerContext, event: Event, reason: str | None) -> list[str]:
    """Every reason of a rejection, one per entry (the outcome joins them in one string)."""
    try:
        ctx.dispatcher.dispatcher.prepare(event)
    except InputValidationError as exc:
        return list(exc.reasons)
    except HeadwaterError as exc:
        return [str(exc)]
    return [reason] if reason else []  # the workspace changed in between


async def _wait_for(
    ctx: TriggerContext, finished: Subscription, accepted: _Accepted, timeout: float
) -> JSONResponse:
    if accepted.job_id is None or accepted.status == "buffered":  # no job of its own yet
        return _accepted(accepted)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        # Re-read on every wake-up: payloads are hints (and "*" means some were lost).
        job = await ctx.store.get_job(accepted.job_id)
        if job is not None and job.status.is_terminal:
            return _final(ctx, job, accepted.created)
        remaining = deadline - loop.time()
        if remaining <= 0 or job is None:
            status = job.status.value if job is not None else accepted.status
            body = {
                "job_id": accepted.job_id,
                "created": accepted.created,
                "status": status,
                "timed_out": True,
            }
            return JSONResponse(body, status_code=202)
        await finished.wait(remaining)


def _final(ctx: TriggerContext, job: JobRecord, created: bool) -> JSONResponse:
    redact = _redactor(ctx)
    body = {
        "job_id": job.id,
        "created": created,
        "status": job.status.value,
        "output": redact(job.output),
        "error": redact(job.error),
    }
    return JSONResponse(body, status_code=200)


def _redactor(ctx: TriggerContext) -> Callable[[Any], Any]:
    redact: Callable[[Any], Any] | None = getattr(ctx, "redact", None)
    return redact if redact is not None else _identity


def _identity(value: Any) -> Any:
    return value
