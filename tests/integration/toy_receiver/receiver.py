"""The toy receiver's runtime half: dispatches its messages once, then waits."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from headwater.triggers.receivers.base import EventReceiver, ReceiverContext


class ToyReceiver(EventReceiver):
    def __init__(self, prefix: str, count: int) -> None:
        self.prefix = prefix
        self.count = count
        self._task: asyncio.Task[None] | None = None

    async def start(self, ctx: ReceiverContext) -> None:
        self._task = asyncio.create_task(self._run(ctx))

    async def _run(self, ctx: ReceiverContext) -> None:
        for n in range(1, self.count + 1):
            message = {"payload": {"n": n, "prefix": self.prefix}, "metadata": {"id": str(n)}}
            await ctx.dispatch([ctx.event(message, f"toy:{self.prefix}:{n}")])
        await asyncio.Event().wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def wait(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def describe(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "count": self.count}
