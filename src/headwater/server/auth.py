"""API-key authentication of ``/api/*``.

The check is an ASGI middleware on the path prefix rather than a per-router dependency:
a router added to ``/api`` later (by another issue) is protected without having to
remember to ask for it. ``/healthz``, ``/metrics`` and the docs stay open; ``/hooks/*``
and ``/worker/*`` authenticate with their own secrets (webhook secrets, worker tokens).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from headwater.errors import ConfigError
from headwater.server.routes_common import error_response

__all__ = [
    "ApiKeyMiddleware",
    "is_cross_site_write",
    "is_loopback",
    "key_matches",
    "require_api_key_for",
    "validate_api_keys",
]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        # Another hostname may resolve to anything; treat it as reachable from outside.
        return False


def require_api_key_for(host: str, keys: Sequence[str]) -> None:
    """Refuse to serve the API on a non-loopback address without an API key.

    Jobs carry inputs and logs; an open API on ``0.0.0.0`` would hand them (and the power
    to start tasks) to the whole network. Called by the process at startup.
    """
    validate_api_keys(keys)
    if not keys and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the API on {host!r} without an API key: set "
            "HEADWATER_API_KEY (or HEADWATER_API_KEYS, comma-separated, or --api-key), "
            "or bind to 127.0.0.1"
        )


def validate_api_keys(keys: Sequence[str]) -> None:
    """An empty or blank key would accept ``Authorization: Bearer `` — refuse it."""
    for key in keys:
        if not key.strip():
            raise ConfigError("an API key cannot be empty")


def key_matches(token: str, keys: Sequence[str]) -> bool:
    """Constant-time comparison of ``token`` against every key.

    Every key is compared (no early exit) so the response time says nothing about which
    key, or how much of one, matched.
    """
    given = token.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


def _is_protected(scope: Scope, prefixes: Sequence[str]) -> bool:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return any(path == p or path.startswith(p + "/") for p in prefixes)


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_cross_site_write(scope: Scope, headers: Headers) -> bool:
    """A state-changing request a browser sent on behalf of another site.

    Without an API key the API trusts whoever can reach it, and a page on any site can
    make the user's browser POST to ``127.0.0.1:8080`` (an empty-body POST needs no
    CORS preflight). Browsers label such requests ``Sec-Fetch-Site: cross-site`` (or
    ``Origin: null`` from sandboxed frames and files); the CLI, curl and the same-origin
    UI never do.
    """
    if scope.get("method", "GET") in _SAFE_METHODS:
        return False
    return (
        headers.get("sec-fetch-site", "").lower() == "cross-site"
        or headers.get("origin", "").lower() == "null"
    )


class ApiKeyMiddleware:
    """Guards every path under ``prefixes``: requires ``Authorization: Bearer <key>``
    when keys are configured, and always refuses cross-site browser writes.

    ``session_ok``: the web UI's check of a request's session cookie. A request without
    an ``Authorization`` header that it accepts passes too (the UI's own script calls the
    API); a write so authenticated must carry ``X-Headwater-UI``, which a cross-site page
    cannot add without a CORS preflight that is never granted.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: Sequence[str],
        prefixes: Sequence[str] = ("/api",),
        session_ok: Callable[[Headers], bool] | None = None,
    ):
        validate_api_keys(keys)
        self.app = app
        self.keys = tuple(keys)
        self.prefixes = tuple(prefixes)
        self.session_ok = session_ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_protected(scope, self.prefixes):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        response = self._reject(scope, headers)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _reject(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        if is_cross_site_write(scope, headers):
            return error_response(
                403, "forbidden", "cross-site requests may not change headwater's state"
            )
        if not self.keys:
            return None
        if "authorization" not in headers and self.session_ok and self.session_ok(headers):
            if scope.get("method", "GET") in _SAFE_METHODS or headers.get("x-headwater-ui"):
                return None
            return error_response(
                403, "forbidden", "a write with the UI's session needs the X-Headwater-UI header"
            )
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return error_response(
                401,
                "unauthorized",
                "this server requires an API key: send 'Authorization: Bearer <key>' "
                "(the CLI reads it from --token or HEADWATER_API_KEY)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not key_matches(token.strip(), self.keys):
            return error_response(
                401,
                "unauthorized",
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return None
