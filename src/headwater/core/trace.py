"""A job's trace id, derived from its id: light enough for the records and the CLI."""

from __future__ import annotations

import uuid

__all__ = ["trace_id_of"]


def trace_id_of(job_id: str) -> str | None:
    """The job's trace id: its UUID's 32 hex digits (None for a non-UUID id)."""
    try:
        return uuid.UUID(job_id).hex
    except ValueError:
        return None
