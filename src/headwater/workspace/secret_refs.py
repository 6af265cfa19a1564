"""Secret values stay out of stored job inputs: sealed at dispatch, filled in at execution.

A trigger's ``input:`` may say ``token: "{{ secret.api_token }}"``. Rendered at dispatch,
the value would be stored in ``jobs.input`` (and shown by the API, copied to backups…).
Instead, ``seal`` replaces every secret value in the rendered data by a reference,
``⟦secret:api_token:<tag>⟧``, and the worker's ``unseal`` puts the value back in the
input of the job it is about to run, from the secrets it holds.

The tag binds a reference to the secret, the job's source (``source_id``: the trigger,
or the parent job of a sub-task) and the place in the input: it is an HMAC keyed by a
key derived (PBKDF2) from the secret's value. Someone who can read jobs and send events
therefore cannot paste a reference into an event of their own to make a worker reveal
the secret elsewhere: a reference unseals only where the trigger itself put it. One that
does not verify (forged, moved, or its secret's value changed while the job waited) is
left as it is, and logged. A secret transformed by a filter (``| b64encode``) is not
recognized here; the log and output masking applies to its plain value only.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

import structlog

__all__ = ["REFERENCE_PREFIX", "has_references", "seal", "unseal"]

log = structlog.get_logger(__name__)

REFERENCE_PREFIX = "⟦secret:"
_MIN_SECRET_LENGTH = 3  # as the Redactor: shorter values would match everywhere
_REFERENCE = re.compile("⟦secret:([^:⟦⟧]{1,200}):([0-9a-f]{32})⟧")
_KDF_ROUNDS = 50_000


def seal(data: Any, secrets: Mapping[str, str], source_id: str | None) -> Any:
    """A copy of JSON-like ``data`` with every secret value in its strings replaced by a
    reference that only ``unseal`` of a job of ``source_id`` resolves, at the same place."""
    names: dict[str, str] = {}
    for name, value in secrets.items():
        if isinstance(value, str) and len(value) >= _MIN_SECRET_LENGTH:
            names.setdefault(value, name)
    if not names:
        return data
    # Longest first: a secret containing another is replaced whole.
    pattern = re.compile("|".join(map(re.escape, sorted(names, key=lambda v: (-len(v), v)))))

    def walk(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, str):
            if not pattern.search(value):
                return value
            return pattern.sub(
                lambda m: _reference(names[m.group(0)], m.group(0), source_id, path), value
            )
        if isinstance(value, Mapping):
            return {k: walk(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, (*path, str(i))) for i, v in enumerate(value)]
        return value

    return walk(data, ())


def has_references(data: Any) -> bool:
    """Whether ``data`` holds a string with a secret reference (cheap; no verification)."""
    if isinstance(data, str):
        return REFERENCE_PREFIX in data
    if isinstance(data, Mapping):
        return any(has_references(v) for v in data.values())
    if isinstance(data, list | tuple):
        return any(has_references(v) for v in data)
    return False


def unseal(data: Any, secrets: Mapping[str, str], source_id: str | None) -> Any:
    """``data`` with each reference that verifies for ``source_id`` and its place
    replaced by the secret's current value (``data`` itself when there are none)."""
    if not has_references(data):
        return data

    def resolve(match: re.Match[str], path: tuple[str, ...]) -> str:
        name, tag = match.group(1), match.group(2)
        value = secrets.get(name)
        if value is not None and hmac.compare_digest(tag, _tag(name, value, source_id, path)):
            return value
        log.warning(
            "secret_reference_unverified",
            secret=name,
            source_id=source_id,
            field="/".join(path),
            hint="the secret is not defined, its value changed since the job was made, or "
            "the reference was copied from elsewhere",
        )
        return match.group(0)

    def walk(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, str):
            if REFERENCE_PREFIX not in value:
                return value
            return _REFERENCE.sub(lambda m: resolve(m, path), value)
        if isinstance(value, Mapping):
            return {k: walk(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, (*path, str(i))) for i, v in enumerate(value)]
        return value

    return walk(data, ())


def _reference(name: str, value: str, source_id: str | None, path: tuple[str, ...]) -> str:
    return f"{REFERENCE_PREFIX}{name}:{_tag(name, value, source_id, path)}⟧"


def _tag(name: str, value: str, source_id: str | None, path: tuple[str, ...]) -> str:
    message = json.dumps([source_id, list(path)], ensure_ascii=False).encode()
    return hmac.new(_key(name, value), message, hashlib.sha256).hexdigest()[:32]


@functools.lru_cache(maxsize=256)
def _key(name: str, value: str) -> bytes:
    """Slow on purpose (once per secret and process): a tag, which the API shows, must
    not let a weak secret be guessed offline at the speed of a plain hash."""
    salt = f"headwater secret reference\0{name}".encode()
    return hashlib.pbkdf2_hmac("sha256", value.encode(), salt, _KDF_ROUNDS)
