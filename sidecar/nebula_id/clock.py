"""Injected time.

Everything that reads time takes a `Clock`, so tests can freeze it, move it
backwards or jump it forwards without sleeping.  Wall time (milliseconds since
the Unix epoch) stamps IDs; monotonic time proves lease deadlines, because a
wall clock that jumps must never extend a lease.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch, as the system reports them."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def sleep(self, seconds: float) -> None:
        """Block for `seconds` (only ever a few milliseconds on the hot path)."""

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the calling task for `seconds` (background loops wait with this)."""


class SystemClock:
    """The real clocks."""

    __slots__ = ()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        try:
            time.sleep(seconds)
        except OSError:
            # Under libfaketime, sleep can fail with EINVAL when the faked
            # clock jumps during it.  Sleeps here last a few milliseconds (a small
            # rollback, the next millisecond), so spin instead of failing the request.
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                pass

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock tests move by hand.  `sleep` and `sleep_async` advance both clocks instantly."""

    def __init__(self, wall_ms: int = 1_750_000_000_000, monotonic: float = 1000.0) -> None:
        self._wall_ms = wall_ms
        self._monotonic = monotonic
        self.slept: list[float] = []

    def wall_ms(self) -> int:
        return self._wall_ms

    def monotonic(self) -> float:
        return self._monotonic

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    async def sleep_async(self, seconds: float) -> None:
        """Advance both clocks at once, then let the other tasks run."""
        self.sleep(seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._wall_ms += round(seconds * 1000)
        self._monotonic += seconds

    def set_wall_ms(self, wall_ms: int) -> None:
        """Set the wall clock only (it may go backwards; monotonic does not)."""
        self._wall_ms = wall_ms
