"""The real clock's sleep survives what libfaketime does to it."""

from __future__ import annotations

import time

import pytest

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
