"""Leaf's adaptive step: double under 15 minutes, halve over 30, stay within bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nebula_id.core.step import next_step

NOW = 10_000_000_000
MINUTE_MS = 60_000


def step_after(
    minutes: float, *, current: int = 1000, min_step: int = 1000, max_step: int = 8000
) -> int:
    return next_step(
        current=current,
        min_step=min_step,
        max_step=max_step,
        last_load_ms=NOW - int(minutes * MINUTE_MS),
        now_ms=NOW,
    )


def test_first_load_uses_the_current_step() -> None:
    assert (
        next_step(current=1000, min_step=1000, max_step=8000, last_load_ms=None, now_ms=NOW) == 1000
    )


def test_doubles_when_the_range_lasted_under_15_minutes() -> None:
    assert step_after(1) == 2000
    assert step_after(14.9, current=2000) == 4000


def test_doubling_stops_at_max_step() -> None:
    assert step_after(1, current=4000) == 8000
    assert step_after(1, current=8000) == 8000
    assert step_after(1, current=5000) == 8000


def test_halves_when_the_range_lasted_over_30_minutes() -> None:
    assert step_after(31, current=8000) == 4000
    assert step_after(600, current=4000) == 2000


def test_halving_stops_at_the_configured_step() -> None:
    assert step_after(31, current=1000) == 1000
    assert step_after(31, current=1500) == 1000


def test_keeps_the_step_between_15_and_30_minutes() -> None:
    assert step_after(15, current=4000) == 4000
    assert step_after(20, current=4000) == 4000
    assert step_after(30, current=4000) == 4000


def test_thresholds_are_configurable() -> None:
    common = {"current": 100, "min_step": 10, "max_step": 1000, "now_ms": NOW}
    assert next_step(**common, last_load_ms=NOW - 5_000, grow_below_s=10, shrink_above_s=20) == 200
    assert next_step(**common, last_load_ms=NOW - 25_000, grow_below_s=10, shrink_above_s=20) == 50


@given(
    current=st.integers(1, 10**7),
    min_step=st.integers(1, 10**6),
    extra=st.integers(0, 10**7),
    lasted_ms=st.one_of(st.none(), st.integers(0, 10**8)),
)
def test_result_always_within_bounds(
    current: int, min_step: int, extra: int, lasted_ms: int | None
) -> None:
    max_step = min_step + extra
    step = next_step(
        current=current,
        min_step=min_step,
        max_step=max_step,
        last_load_ms=None if lasted_ms is None else NOW - lasted_ms,
        now_ms=NOW,
    )
    assert min_step <= step <= max_step
