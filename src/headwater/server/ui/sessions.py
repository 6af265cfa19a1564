"""The UI's login sessions: an API key pasted once, then an opaque cookie.

A browser cannot attach ``Authorization: Bearer`` to a page load, an ``EventSource`` or a
link, so the UI trades the key for a session: ``POST /login`` checks the key (in constant
time, as the API does) and sets ``headwater_session``, a random token that only this
process knows. The server keeps the SHA-256 of each token, never the token, so a memory
dump does not hand out sessions; logout deletes it, which a signed cookie could not do.
Sessions live in the process: a restart logs everyone out (the key is pasted again).

The cookie is HttpOnly (scripts cannot read it) and SameSite=Strict (another site's page
cannot make the browser send it). A state-changing ``/api`` request authenticated by the
cookie must also carry ``X-Headwater-UI: 1``: a custom header needs a CORS preflight that
headwater never grants, so a cross-site form or fetch cannot forge one.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from http.cookies import SimpleCookie

from starlette.datastructures import Headers

from headwater.server.auth import key_matches, validate_api_keys

__all__ = ["COOKIE", "SESSION_TTL", "UI_HEADER", "UiSessions", "cookie_token"]

COOKIE = "headwater_session"
UI_HEADER = "x-headwater-ui"  # sent by the UI's own script on every API write
SESSION_TTL = 12 * 3600.0  # seconds a login lasts
_MAX_SESSIONS = 1000  # oldest dropped first: a login loop cannot grow memory without bound


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cookie_token(headers: Headers) -> str | None:
    """The session token of a request's ``Cookie`` header, if any."""
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is no session
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


class UiSessions:
    """The keys a login accepts and the sessions they opened (one per app)."""

    def __init__(
        self,
        keys: Sequence[str],
        ttl: float = SESSION_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        validate_api_keys(keys)
        self.keys = tuple(keys)
        self._ttl = ttl
        self._clock = clock
        self._expiry: dict[str, float] = {}  # token digest -> monotonic expiry

    @property
    def required(self) -> bool:
        """Whether the UI needs a login: exactly when the API needs a key."""
        return bool(self.keys)

    def login(self, key: str) -> str | None:
        """A new session token for a valid key; None for a wrong one."""
        if not self.required or not key_matches(key.strip(), self.keys):
            return None
        self._expire()
        while len(self._expiry) >= _MAX_SESSIONS:
            self._expiry.pop(next(iter(self._expiry)))
        token = secrets.token_urlsafe(32)
        self._expiry[_digest(token)] = self._clock() + self._ttl
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        expiry = self._expiry.get(_digest(token))
        if expiry is None:
            return False
        if expiry < self._clock():
            self._expiry.pop(_digest(token), None)
            return False
        return True

    def logout(self, token: str | None) -> None:
        if token:
            self._expiry.pop(_digest(token), None)

    def has_session(self, headers: Headers) -> bool:
        """Whether a request carries a live session cookie."""
        return self.valid(cookie_token(headers))

    def allows(self, headers: Headers) -> bool:
        """Whether a request may see the UI: no key configured, a live session, or the
        key itself as ``Authorization: Bearer`` (``curl`` fetching a log download)."""
        if not self.required or self.valid(cookie_token(headers)):
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and key_matches(token.strip(), self.keys)

    def _expire(self) -> None:
        now = self._clock()
        for digest in [d for d, exp in self._expiry.items() if exp < now]:
            del self._expiry[digest]
