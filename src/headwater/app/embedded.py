"""uvicorn run inside a node's own event loop, for ``headwater up`` and ``headwater server``."""

from __future__ import annotations

import contextlib
from typing import Any

from headwater.errors import HeadwaterError

__all__ = ["EmbeddedServer"]


class EmbeddedServer:
    """uvicorn without its own signal handling (the node owns SIGINT/SIGTERM)."""

    def __init__(self, config: Any) -> None:
        import uvicorn

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # type: ignore[no-untyped-def]
                yield

        self._server = _Server(config)

    @property
    def should_exit(self) -> bool:
        return bool(self._server.should_exit)

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._server.should_exit = value

    @property
    def started(self) -> bool:
        """Listening: requests are answered from now on."""
        return bool(self._server.started)

    async def serve(self) -> None:
        await self._server.serve()
        if not self._server.started and not self._server.should_exit:
            raise HeadwaterError("the HTTP server could not start (is the port in use?)")
