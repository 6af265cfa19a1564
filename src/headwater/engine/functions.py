"""``type: function`` actions: a Python callable run inside the worker process."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib
import inspect
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headwater import jsonsafe
from headwater.errors import JsonValueError

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
    """Imports each callable once; calls it with the step input as keyword arguments.

    ``preloaded`` maps refs to callables already in hand (the SDK's registrations), so a
    function defined where importing by name cannot reach it still resolves."""

    def __init__(self, preloaded: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self._cache: dict[str, Callable[..., Any]] = dict(preloaded or {})

    def get(self, ref: str, root: Path | None = None) -> Callable[..., Any]:
        """The callable; a module not found on ``sys.path`` is looked for in ``root``
        (the workspace folder), appended so it never shadows an installed module."""
        fn = self._cache.get(ref)
        if fn is None:
            try:
                fn = resolve_callable(ref)
            except ModuleNotFoundError as exc:
                top = ref.partition(":")[0].split(".")[0]
                folder = str(root.resolve()) if root is not None else None
                if exc.name != top or folder is None or folder in sys.path:
                    raise
                sys.path.append(folder)
                fn = resolve_callable(ref)
            self._cache[ref] = fn
        return fn

    async def call(
        self,
        ref: str,
        kwargs: dict[str, Any],
        timeout: float | None,
        cancel: asyncio.Event,
        root: Path | None = None,
    ) -> FunctionOutcome:
        try:
            fn = self.get(ref, root)
        except Exception as exc:
            return FunctionOutcome(
                error=f"cannot load function {ref!r}: {exc}",
                traceback=tuple(traceback.format_exc().splitlines()),
            )
        if cancel.is_set():
            return FunctionOutcome(error="cancelled", cancelled=True)
        call: asyncio.Future[Any]
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
        ):
            call = asyncio.ensure_future(fn(**kwargs))
        else:
            # A sync callable runs in a thread so it cannot stall the worker's event loop;
            # a thread cannot be killed, so on timeout/cancel it is abandoned. (What
            # asyncio.to_thread does, without wrapping the future in one more task.)
            context = contextvars.copy_context()
            call = asyncio.get_running_loop().run_in_executor(
                None, functools.partial(context.run, fn, **kwargs)
            )
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        stopper = asyncio.ensure_future(cancel.wait())
        try:
            done, _ = await asyncio.wait(
                [call, stopper], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if call in done and call.exception() is None and inspect.isawaitable(call.result()):
                # A sync callable that returned an awaitable (e.g. a partial of an async
                # function): await it within what is left of the timeout.
                call = asyncio.ensure_future(call.result())
                left = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    [call, stopper], timeout=left, return_when=asyncio.FIRST_COMPLETED
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
            # Strict: NaN, a NUL or a lone surrogate would make the job's finish fail.
            jsonsafe.check_value(value)
        except JsonValueError as err:
            return FunctionOutcome(
                error=f"returned a value that is not JSON or cannot be stored: {err}"
            )
        return FunctionOutcome(value=value)
