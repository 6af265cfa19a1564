"""The API key option, shared by the server commands and the client commands (a module
of its own: the client commands must not load the server's)."""

from __future__ import annotations

__all__ = ["api_keys"]


def api_keys(values: list[str] | None) -> list[str]:
    """The keys of ``--api-key`` / ``HEADWATER_API_KEY(S)``: the option repeated, or one
    comma-separated value (how an environment variable carries several)."""
    keys = [k for k in (values or []) if k]
    if len(keys) == 1 and "," in keys[0]:
        keys = [k.strip() for k in keys[0].split(",") if k.strip()]
    return keys
