"""Waiting on a condition: the one polling helper of the test suites.

Tests wait for what they need to see, never for a fixed time.  `eventually`
calls a condition until it returns something truthy and returns that value;
on timeout it fails with what it waited for and the last value (or exception)
seen.  `eventually_async` is the same inside an event loop, for conditions that
are plain functions or coroutine functions.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

NO_EXCEPTIONS: tuple[type[BaseException], ...] = ()


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")


def eventually(
    condition: Callable[[], T | None],
    timeout: float,
    *,
    what: str = "the condition",
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = NO_EXCEPTIONS,
) -> T:
    """Call `condition` until it returns something truthy, and return that.

    Exceptions of the `ignoring` types count as "not yet" (for example a
    connection refused while a server starts); any other propagates at once.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
        except ignoring as e:
            last = e
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)


async def eventually_async(
    condition: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    timeout: float,  # noqa: ASYNC109 - a deadline for the polling, not for one await
    *,
    what: str = "the condition",
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = NO_EXCEPTIONS,
) -> T:
    """`eventually` for a running event loop; `condition` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as e:
            last = e
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(interval)
