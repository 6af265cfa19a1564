"""``type: function`` actions: a Python callable run inside the worker process.

A function's module is imported once. A workspace reload calls ``FunctionCache.reload``,
which re-imports every module of the workspace folder whose file changed since it was
imported (helpers first, then the modules the functions live in), so an edited function
runs its new code from the next step on; a module that no longer imports makes its
steps fail with the import error. A worker whose workspace moved to another folder (a
remote worker's new bundle) forgets the old folder's modules the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

from headwater import jsonsafe
from headwater.engine.function_context import WorkflowSuspended
from headwater.engine.function_output import FunctionOutput, LineSink, install_routing
from headwater.errors import JsonValueError

__all__ = ["FunctionCache", "FunctionOutcome", "resolve_callable"]


log = structlog.get_logger(__name__)

_Stamp = tuple[int, int]  # (mtime in ns, size) of a module's file


@dataclass(frozen=True, slots=True)
class FunctionOutcome:
    value: Any = None
    error: str | None = None
    traceback: tuple[str, ...] = ()
    cancelled: bool = False
    suspended: bool = False  # a workflow waits: the job is let go, not ended


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

    def __init__(
        self, preloaded: Mapping[str, Callable[..., Any]] | None = None, threads: int | None = None
    ) -> None:
        """``threads``: how many sync callables may run at once (the worker's concurrency,
        so that none waits for a thread; a sync workflow holds its thread while it waits
        for its records). None: the loop's default executor (cpu count + 4 threads)."""
        self._pool = (
            ThreadPoolExecutor(threads, thread_name_prefix="headwater-function")
            if threads
            else None
        )
        self._preloaded = dict(preloaded or {})
        self._cache: dict[str, Callable[..., Any]] = dict(self._preloaded)
        self._given: Path | None = None  # the workspace folder as last given
        self._root: str | None = None  # ... resolved
        # The workspace folder's modules as imported: name -> its file's stamp then.
        self._stamps: dict[str, _Stamp] = {}

    def get(self, ref: str, root: Path | None = None) -> Callable[..., Any]:
        """The callable; a module not found on ``sys.path`` is looked for in ``root``
        (the workspace folder), appended so it never shadows an installed module."""
        if root is not None and root != self._given:  # not on every call: resolve() stats
            self._given = root
            resolved = str(root.resolve())
            if resolved != self._root:
                self._move_to(resolved)
        fn = self._cache.get(ref)
        if fn is None:
            try:
                fn = resolve_callable(ref)
            except ModuleNotFoundError as exc:
                top = ref.partition(":")[0].split(".")[0]
                folder = self._root if root is not None else None
                if exc.name != top or folder is None or folder in sys.path:
                    raise
                sys.path.append(folder)
                fn = resolve_callable(ref)
            finally:
                self._stamp_modules()
            self._cache[ref] = fn
        return fn

    def reload(self) -> list[str]:
        """Re-import the workspace folder's modules whose file changed since they were
        imported (and forget the callables found so far); the names re-imported."""
        changed = [name for name, stamp in self._stamps.items() if _stamp(name) != stamp]
        if not changed:
            return []
        # The functions' own modules last: they hold what they imported from helpers.
        owners = {ref.partition(":")[0] for ref in self._cache if ref not in self._preloaded}
        order = sorted(set(changed) | (owners & set(self._stamps)), key=lambda n: n in owners)
        reloaded: list[str] = []
        for name in order:
            module = sys.modules.get(name)
            self._stamps.pop(name, None)
            if module is None:
                continue
            _drop_bytecode(module)
            try:
                importlib.reload(module)
            except Exception as exc:
                # Imported again (and its error reported) by the next step that needs it.
                sys.modules.pop(name, None)
                log.warning("function_module_reload_failed", module=name, error=repr(exc))
                continue
            reloaded.append(name)
        self._cache = dict(self._preloaded)
        self._stamp_modules()
        log.info("function_modules_reloaded", modules=reloaded)
        return reloaded

    def _move_to(self, folder: str) -> None:
        """The workspace is now in ``folder``: forget the previous folder's modules."""
        previous, self._root = self._root, folder
        if previous is None:
            return
        for name in list(self._stamps):
            sys.modules.pop(name, None)
        self._stamps.clear()
        if previous in sys.path:
            sys.path.remove(previous)
        self._cache = dict(self._preloaded)

    def _stamp_modules(self) -> None:
        root = self._root
        if root is None:
            return
        prefix = root.rstrip(os.sep) + os.sep
        for name, module in list(sys.modules.items()):
            if name in self._stamps:
                continue
            file = _module_file(module)
            if file is not None and file.startswith(prefix):
                stamp = _stamp(name)
                if stamp is not None:
                    self._stamps[name] = stamp

    async def call(
        self,
        ref: str,
        kwargs: dict[str, Any],
        timeout: float | None,
        cancel: asyncio.Event,
        root: Path | None = None,
        sink: LineSink | None = None,
    ) -> FunctionOutcome:
        """Run the function; with ``sink``, what it prints or logs is handed to it (as
        lines of the job's stdout/stderr) instead of going to the process's streams."""
        try:
            fn = self.get(ref, root)
        except Exception as exc:
            return FunctionOutcome(
                error=f"cannot load function {ref!r}: {exc}",
                traceback=tuple(traceback.format_exc().splitlines()),
            )
        if cancel.is_set():
            return FunctionOutcome(error="cancelled", cancelled=True)
        output: FunctionOutput | None = None
        if sink is not None:
            install_routing()
            output = FunctionOutput(sink)
            output.start()
        try:
            return await self._call(fn, kwargs, timeout, cancel, output)
        finally:
            if output is not None:
                await output.close()

    async def _call(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        timeout: float | None,
        cancel: asyncio.Event,
        output: FunctionOutput | None,
    ) -> FunctionOutcome:
        loop = asyncio.get_running_loop()
        # print() and logging inside the function go to its job's log (see function_output).
        context = output.context() if output is not None else contextvars.copy_context()

        def start(awaitable: Any) -> asyncio.Future[Any]:
            if inspect.iscoroutine(awaitable):
                return loop.create_task(awaitable, context=context)
            future: asyncio.Future[Any] = asyncio.ensure_future(awaitable)
            return future

        call: asyncio.Future[Any]
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
        ):
            call = start(fn(**kwargs))
        else:
            # A sync callable runs in a thread so it cannot stall the worker's event loop;
            # a thread cannot be killed, so on timeout/cancel it is abandoned. (What
            # asyncio.to_thread does, without wrapping the future in one more task.)
            call = loop.run_in_executor(self._pool, functools.partial(context.run, fn, **kwargs))
        deadline = None if timeout is None else loop.time() + timeout
        stopper = asyncio.ensure_future(cancel.wait())
        try:
            done, _ = await asyncio.wait(
                [call, stopper], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if call in done and call.exception() is None and inspect.isawaitable(call.result()):
                # A sync callable that returned an awaitable (e.g. a partial of an async
                # function): await it within what is left of the timeout.
                call = start(call.result())
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
        if isinstance(failure, WorkflowSuspended):
            return FunctionOutcome(suspended=True, error=str(failure) or None)
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


def _module_file(module: ModuleType | None) -> str | None:
    file = getattr(module, "__file__", None)
    return file if isinstance(file, str) else None


def _stamp(name: str) -> _Stamp | None:
    file = _module_file(sys.modules.get(name))
    if file is None:
        return None
    try:
        st = os.stat(file)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _drop_bytecode(module: ModuleType) -> None:
    """Python trusts a .pyc whose source has the same size and mtime in whole seconds:
    an edit within the second would be missed without this."""
    cached = getattr(module, "__cached__", None)
    if isinstance(cached, str):
        with contextlib.suppress(OSError):
            os.remove(cached)
