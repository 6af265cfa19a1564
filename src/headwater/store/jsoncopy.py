"""A deep, JSON-shaped copy of a value: what a database round trip gives back."""

from __future__ import annotations

import json
from typing import Any

from headwater import jsonsafe

__all__ = ["json_copy"]


def json_copy(value: Any) -> Any:
    """Encoded with the store's strict encoder (NaN, NUL, lone surrogates raise
    ``JsonValueError`` as SqlStore's do), then decoded: no object is shared."""
    return None if value is None else json.loads(jsonsafe.encode(value))
