"""422 for API and worker-protocol request bodies that ``headwater.jsonsafe`` refuses.

FastAPI decodes JSON bodies with ``json.loads``, which takes ``NaN``/``Infinity``,
unbounded nesting, and strings no store can keep (``\\u0000``, lone surrogates). Such a
value then fails later: a 500 when the store refuses it, or a job whose finish can never
be written. This middleware reads the body first (it runs inside ``BodyLimitMiddleware``,
so the body is bounded), checks it with the strict decoder and answers 422 with the
reason; an acceptable body is handed on unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headwater import jsonsafe
from headwater.errors import JsonValueError
from headwater.server.routes_common import error_response

__all__ = ["StrictJsonMiddleware"]

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class StrictJsonMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        prefixes: Sequence[str] = ("/api/", "/worker/"),
        lenient: Sequence[str] = ("/worker/",),
    ) -> None:
        self.app = app
        self.prefixes = tuple(prefixes)
        # Under these, strings no store can keep pass: a worker's log lines may hold a
        # NUL its step printed, and refusing the whole batch would stall the worker
        # (step outputs are checked where they are made, see headwater.engine).
        self.lenient = tuple(lenient)

    def _applies(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            return False
        if not scope["path"].startswith(self.prefixes):
            return False
        content_type = Headers(scope=scope).get("content-type", "").lower()
        return "json" in content_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        tail: list[Message] = []  # a disconnect, handed on as it came
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    tail.append(message)
                    break
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except StarletteHTTPException as exc:  # the body limit, raised while reading
            detail = exc.detail if isinstance(exc.detail, str) else "request refused"
            await error_response(exc.status_code, "payload_too_large", detail)(scope, receive, send)
            return
        body = b"".join(chunks)
        if body.strip() and not tail:
            try:
                jsonsafe.loads(body)
            except JsonValueError as exc:
                if exc.unstorable and scope["path"].startswith(self.lenient):
                    await self._pass_on(scope, receive, send, body, tail)
                    return
                response = error_response(
                    422, "invalid_json", f"the request body is not acceptable JSON: {exc}"
                )
                await response(scope, receive, send)
                return
        await self._pass_on(scope, receive, send, body, tail)

    async def _pass_on(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, tail: list[Message]
    ) -> None:
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        replay += tail

        async def replayed() -> Message:
            if replay:
                return replay.pop(0)
            return await receive()

        await self.app(scope, replayed, send)
