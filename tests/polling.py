"""Waiting in tests without luck: poll a condition with a deadline instead of sleeping a
guessed time and then asserting.

- ``eventually(check)``: something must happen; returns as soon as it has (the check's
  truthy value), fails with ``what`` when the deadline passes first.
- ``stays_true_for(check, duration)``: something must NOT happen (or must keep holding)
  for ``duration``; fails the moment it stops holding. A short ``duration`` can miss a
  late event, never invent one: such a test may pass wrongly under load, never fail
  wrongly.
- ``join(tasks)``: a teardown that waits for background tasks and re-raises what they
  raised, so an error in a task fails the test instead of being swallowed.

A check may be a plain function or a coroutine function.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

__all__ = ["eventually", "join", "stays_true_for", "stays_true_for_sync"]

T = TypeVar("T")
Check = Callable[[], Any]


async def _value(check: Check) -> Any:
    value = check()
    if inspect.isawaitable(value):
        value = await value
    return value


async def eventually(
    check: Check, timeout: float = 10.0, *, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = await _value(check)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


async def stays_true_for(
    check: Check, duration: float, *, interval: float = 0.02, what: str = "condition"
) -> None:
    """Poll ``check`` for ``duration`` seconds; fail as soon as it is falsy."""
    deadline = time.monotonic() + duration
    while True:
        if not await _value(check):
            raise AssertionError(f"{what} stopped holding before {duration:g}s were over")
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(interval)


async def join(tasks: Iterable[Awaitable[Any]], timeout: float = 30.0) -> None:
    """Wait for every task (all of them, even when one fails), then raise the first
    error any of them raised; cancellation is not an error."""
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout)
    errors = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
    ]
    if errors:
        raise errors[0]


def stays_true_for_sync(
    check: Callable[[], Any], duration: float, *, what: str = "condition"
) -> None:
    """``stays_true_for`` for a test without an event loop."""
    deadline = time.monotonic() + duration
    while True:
        if not check():
            raise AssertionError(f"{what} stopped holding before {duration:g}s were over")
        if time.monotonic() >= deadline:
            return
        time.sleep(0.02)
