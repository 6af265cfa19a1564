"""``type: function`` actions: a Python callable run inside the worker process."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib
import inspect
import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["FunctionCache", "FunctionOutcome", "resolve_callable"]


@dataclass(frozen=True, slots=True)
class FunctionOutcome:
    value: Any = None
    error: str | None = None
    traceback: tuple[str, ...] = ()
    cancelled: bool = False


def resolve_callable(ref: str) -> Callable[..., Any]:
    """``"package.module:callable"`` (or ``module:Class.method``) to the callable."""
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"function {ref!r} must look like 'package.module:callable'")
    target: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{ref!r} is not callable")
    return target  # type: ignore[no-any-return]


class FunctionCache:
    """Imports each callable once; calls it with the step input as keyword arguments."""

    def __init__(self) -> None:
        self._cache: dict[str, Callable[..., Any]] = {}

    def get(self, ref: str) -> Callable[..., Any]:
        fn = self._cache.get(ref)
        if fn is None:
            fn = self._cache[ref] = resolve_callable(ref)
        return fn

    async def call(
        self, ref: str, kwargs: dict[str, Any], timeout: float | None, cancel: asyncio.Event
    ) -> FunctionOutcome:
        try:
            fn = self.get(ref)
        except Exception as exc:
            return FunctionOutcome(
                error=f"cannot load function {ref!r}: {exc}",
                traceback=tuple(traceback.format_exc().splitlines()),
            )
        if cancel.is_set():
            return FunctionOutcome(error="cancelled", cancelled=True)
        call: asyncio.Future[Any]
        if inspect.iscoroutinefunction(fn):
            call = asyncio.ensure_future(fn(**kwargs))
        else:
            # A sync callable runs in a thread so it cannot stall the worker's event loop;
            # a thread cannot be killed, so on timeout/cancel it is abandoned. (What
            # asyncio.to_thread does, without wrapping the future in one more task.)
            context = contextvars.copy_context()
            call = asyncio.get_running_loop().run_in_executor(
                None, functools.partial(context.run, fn, **kwargs)
            )
        stopper = asyncio.ensure_future(cancel.wait())
        try:
            done, _ = await asyncio.wait(
                [call, stopper], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
        if call not in done:
            call.cancel()
            with contextlib.suppress(BaseException):
                await call
            if cancel.is_set():
                return FunctionOutcome(error="cancelled", cancelled=True)
            return FunctionOutcome(error=f"timed out after {timeout:g}s")
        failure = call.exception()
        if failure is not None:
            lines = traceback.format_exception(type(failure), failure, failure.__traceback__)
            return FunctionOutcome(
                error=f"raised {type(failure).__name__}: {failure}",
                traceback=tuple("".join(lines).splitlines()),
            )
        value = call.result()
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            return FunctionOutcome(error=f"returned a value that is not JSON: {err}")
        return FunctionOutcome(value=value)
