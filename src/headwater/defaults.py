"""Default addresses shared by the CLI and the library, in a module that imports nothing,
so that the CLI can show them in ``--help`` without loading the SDK or an HTTP client."""

from __future__ import annotations

__all__ = ["BROWSER_PAGE", "DEFAULT_REDIS_URL", "DEFAULT_SERVER"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_SERVER = "http://127.0.0.1:8080"

# The page ``headwater open`` shows: the API's interactive docs until the web UI exists,
# then "/".
BROWSER_PAGE = "/docs"
