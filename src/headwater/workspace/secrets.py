"""The workspace ``secrets:`` section, and redaction of secret values.

Each value of ``secrets:`` is a template rendered once, when a server or worker starts
(as Strøm renders it at load time), with two things in scope:

- ``env``: the process environment, ``{{ env.DB_PASSWORD }}``;
- ``file('path')``: a file's content without its trailing newline; a relative path is
  relative to the workspace root, so ``file('/run/secrets/db')`` reads a Docker secret.

A value without ``{{`` is a literal. A value may be a map of values (Strøm's nested
secrets, ``{{ secret.db.password }}``): each leaf is a secret of its own, kept under its
dotted name (``db.password``; see ``headwater.workspace.secret_tree``). A missing
variable or file is an error naming the secret (``headwater validate`` only warns: the
value may exist where the job runs).

``Redactor`` replaces every occurrence of every secret value (of 3 characters or more)
with ``••••••`` in log lines and API responses, substrings included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from headwater.errors import TemplateError
from headwater.workspace.models import Workspace
from headwater.workspace.templating import TemplateEngine

__all__ = ["MASK", "Redactor", "resolve_secrets", "secrets_section_context"]

MASK = "••••••"
_MIN_SECRET_LENGTH = 3
# Lines of a multi-line secret (a PEM key) are redacted on their own too, because a log
# line only ever holds one of them; short lines ("-----END-----" aside) are skipped.
_MIN_SECRET_LINE_LENGTH = 8


def secrets_section_context(root: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """What a ``secrets:`` template can read: ``env`` and ``file()``."""

    def read_file(path: str) -> str:
        target = Path(path)
        if not target.is_absolute():
            target = root / target
        try:
            text = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"file({path!r}): cannot read {target}: {exc}") from None
        return text.removesuffix("\n").removesuffix("\r")

    return {"env": environ, "file": read_file}


def resolve_secrets(
    ws: Workspace,
    environ: Mapping[str, str],
    *,
    engine: TemplateEngine | None = None,
) -> dict[str, str]:
    """Render every secret; raises TemplateError naming the first secret that fails."""
    engine = engine or TemplateEngine()
    context = secrets_section_context(ws.root, environ)
    resolved: dict[str, str] = {}
    for name, template in ws.secrets.items():
        resolved[name] = _render_secret(engine, name, template, context)
    return resolved


def check_secrets(
    ws: Workspace, environ: Mapping[str, str], engine: TemplateEngine
) -> dict[str, str]:
    """Render each secret on its own: ``{name: why it failed}`` for the ones that fail."""
    context = secrets_section_context(ws.root, environ)
    failures: dict[str, str] = {}
    for name, template in ws.secrets.items():
        try:
            _render_secret(engine, name, template, context)
        except TemplateError as exc:
            failures[name] = str(exc)
    return failures


def _render_secret(
    engine: TemplateEngine, name: str, template: str, context: Mapping[str, Any]
) -> str:
    try:
        return engine.render_str(template, context, where=f"secret {name!r}")
    except TemplateError as exc:
        message = str(exc)
        if f"secret {name!r}" not in message:
            message = f"secret {name!r}: {message}"
        raise TemplateError(message) from None


_json_text = json.JSONEncoder(ensure_ascii=False).encode


class Redactor:
    """Masks secret values in text and in JSON-like data."""

    def __init__(self, secret_values: Iterable[str]) -> None:
        needles: set[str] = set()
        for value in secret_values:
            if not isinstance(value, str):
                continue
            if len(value) >= _MIN_SECRET_LENGTH:
                needles.add(value)
            if "\n" in value:
                needles.update(
                    line.strip()
                    for line in value.splitlines()
                    if len(line.strip()) >= _MIN_SECRET_LINE_LENGTH
                )
        # Longest first: "abcdef" must be masked whole, not as "abc" + "def".
        ordered = sorted(needles, key=lambda v: (-len(v), v))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        # JSON encodes a string character by character, and leaves these needles'
        # characters as they are: a needle inside any string of a value is then also in
        # the value's JSON text, and one search of that text can clear the whole value.
        self._plain = all(_json_text(v)[1:-1] == v for v in ordered)

    @property
    def active(self) -> bool:
        """False when there is nothing to redact (callers may skip the work)."""
        return self._pattern is not None

    def redact_text(self, text: str) -> str:
        """``text`` with every secret value masked; the same object when nothing matched."""
        pattern = self._pattern
        if pattern is None or not pattern.search(text):
            return text
        return pattern.sub(MASK, text)

    def redact(self, obj: Any) -> Any:
        """JSON-like ``obj`` with secret values masked in every string: a copy, or
        ``obj`` itself when it holds no secret value."""
        if self._pattern is None:
            return obj
        if self._plain:
            # One C-speed encode and search instead of a Python walk of every value (a
            # page of 50 jobs is ~1,300 of them); the walk only when something matched.
            try:
                found = self._pattern.search(_json_text(obj)) is not None
            except (TypeError, ValueError):  # not JSON (a datetime, a cycle): walk it
                found = True
            if not found:
                return obj
        return self._redact(obj, self.redact_text)

    def _redact(self, obj: Any, text: Callable[[str], str]) -> Any:
        if isinstance(obj, str):
            return text(obj)
        if isinstance(obj, Mapping):
            return {
                (text(k) if isinstance(k, str) else k): self._redact(v, text)
                for k, v in obj.items()
            }
        if isinstance(obj, list | tuple):
            return [self._redact(v, text) for v in obj]
        return obj
