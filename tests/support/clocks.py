"""A fake clock for code that waits in the background (`Clock.sleep_async`).

`nebula_id.clock.FakeClock` advances at once when slept on, which suits code
that sleeps on its own hot path.  A background loop (the worker-ID holder's
keepalive ticks) would spin on it instead.  `SteppedClock` parks each
`sleep_async` until the test moves time past its end, so a test decides when
every tick happens and checks deadlines exactly, with no wall clock involved.
"""

from __future__ import annotations

import asyncio

from nebula_id.clock import FakeClock


class SteppedClock(FakeClock):
    """`sleep_async` waits until `advance` moves the clock past the sleep's end."""

    def __init__(self, wall_ms: int = 1_750_000_000_000, monotonic: float = 1000.0) -> None:
        super().__init__(wall_ms, monotonic)
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep_async(self, seconds: float) -> None:
        self.slept.append(seconds)
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.monotonic() + seconds, woken))
        await woken

    def advance(self, seconds: float) -> None:
        """Move both clocks forward and wake every sleeper whose time has come."""
        super().advance(seconds)
        now = self.monotonic()
        due = [w for at, w in self._sleepers if at <= now]
        self._sleepers = [(at, w) for at, w in self._sleepers if at > now]
        for woken in due:
            if not woken.done():
                woken.set_result(None)

    @property
    def sleeping(self) -> int:
        """Tasks parked in `sleep_async` now."""
        return sum(1 for _, w in self._sleepers if not w.done())
