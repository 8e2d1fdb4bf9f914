"""The real clock's sleep survives what libfaketime does to it."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.support.clocks import SteppedClock

from nebula_id import clock as clocks


def test_system_clock_sleep_spins_when_the_os_refuses_to_sleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(_: float) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(time, "sleep", refuse)
    started = time.perf_counter()
    clocks.SystemClock().sleep(0.003)
    assert time.perf_counter() - started >= 0.003


def test_fake_clock_sleep_moves_both_clocks() -> None:
    fake = clocks.FakeClock(wall_ms=1_000, monotonic=5.0)
    fake.sleep(0.25)
    assert (fake.wall_ms(), fake.monotonic(), fake.slept) == (1_250, 5.25, [0.25])


async def test_fake_clock_sleep_async_moves_both_clocks_at_once() -> None:
    fake = clocks.FakeClock(wall_ms=1_000, monotonic=5.0)
    await fake.sleep_async(2.0)
    assert (fake.wall_ms(), fake.monotonic(), fake.slept) == (3_000, 7.0, [2.0])


async def test_a_stepped_clock_wakes_a_sleeper_only_once_time_reaches_its_end() -> None:
    stepped = SteppedClock(monotonic=10.0)
    sleeper = asyncio.create_task(stepped.sleep_async(1.0))
    await asyncio.sleep(0)
    assert stepped.sleeping == 1
    stepped.advance(0.999)
    await asyncio.sleep(0)
    assert not sleeper.done()
    stepped.advance(0.001)
    await asyncio.wait_for(sleeper, 5)
    assert stepped.sleeping == 0
    assert stepped.monotonic() == 11.0
