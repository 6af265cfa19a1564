"""Worker tokens: ``hwt_<id>_<secret>``, stored as the SHA-256 of the secret part.

The id is public (listed, revoked by it); the secret is 256 random bits, so a plain
SHA-256 is enough (no password stretching needed: nothing to brute-force) and a stolen
database copy grants nothing. A request's token is looked up by its id, then its secret's
digest is compared with ``hmac.compare_digest``. Verified tokens are cached for a few
seconds so that a worker's requests do not each cost a query; a revocation takes effect
within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import structlog

from headwater.errors import AuthError
from headwater.store.base import Store, WorkerTokenRecord
from headwater.store.ids import utcnow

__all__ = [
    "TOKEN_PREFIX",
    "IssuedToken",
    "WorkerTokenVerifier",
    "issue_token",
    "parse_token",
    "secret_digest",
]

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "hwt"  # noqa: S105 (a format marker, not a secret)
_ID_HEX = 12
_SECRET_HEX = 64
_MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True, slots=True)
class IssuedToken:
    record: WorkerTokenRecord
    token: str  # shown once; only its digest is stored


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(name: str) -> IssuedToken:
    """A new token named ``name`` (to insert with ``Store.insert_worker_token``)."""
    token_id = secrets.token_hex(_ID_HEX // 2)
    secret = secrets.token_hex(_SECRET_HEX // 2)
    record = WorkerTokenRecord(
        id=token_id, name=name, secret_sha256=secret_digest(secret), created_at=utcnow()
    )
    return IssuedToken(record, f"{TOKEN_PREFIX}_{token_id}_{secret}")


def parse_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    if len(token) > _MAX_TOKEN_LENGTH:
        return None
    parts = token.strip().split("_")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    token_id, secret = parts[1], parts[2]
    if len(token_id) != _ID_HEX or len(secret) != _SECRET_HEX:
        return None
    if not all(c in "0123456789abcdef" for c in token_id + secret):
        return None
    return token_id, secret


class WorkerTokenVerifier:
    """Checks bearer worker tokens against the store (with a short positive cache)."""

    def __init__(self, store: Store, cache_secs: float = 5.0, touch_secs: float = 60.0):
        self._store = store
        self._cache_secs = cache_secs
        self._touch_secs = touch_secs
        # sha256 of the whole token -> (record, valid until); never the token itself.
        self._cache: dict[str, tuple[WorkerTokenRecord, float]] = {}
        self._touched: dict[str, float] = {}

    async def verify(self, token: str) -> WorkerTokenRecord:
        """The token's record; raises AuthError for a malformed, unknown or revoked one."""
        now = time.monotonic()
        cache_key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[1] > now:
            return cached[0]
        parsed = parse_token(token)
        if parsed is None:
            raise AuthError(
                "the worker token is malformed: it looks like hwt_<id>_<secret> "
                "(create one with 'headwater worker-tokens create NAME')"
            )
        token_id, secret = parsed
        record = await self._store.get_worker_token(token_id)
        # Compare even when the id is unknown, so timing does not tell which ids exist.
        expected = record.secret_sha256 if record is not None else "0" * 64
        matches = hmac.compare_digest(secret_digest(secret).encode(), expected.encode())
        if record is None or not matches:
            raise AuthError("the worker token is not valid")
        if record.revoked_at is not None:
            raise AuthError(f"the worker token {record.id} ({record.name}) was revoked")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[cache_key] = (record, now + self._cache_secs)
        if self._touched.get(record.id, 0.0) < now - self._touch_secs:
            self._touched[record.id] = now
            try:
                await self._store.touch_worker_token(record.id)
            except Exception:
                log.warning("worker_token_touch_failed", token_id=record.id)
        return record
