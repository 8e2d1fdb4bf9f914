"""The token bucket with a hand-moved clock."""

from __future__ import annotations

import pytest

from nebula_id.clock import FakeClock
from nebula_id.core import ratelimit
from nebula_id.core.ratelimit import TokenBucket


def test_burst_passes_then_refuses_with_wait_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.1)


def test_refills_at_rate_and_caps_at_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    bucket.try_take()
    bucket.try_take()
    clock.advance(0.1)
    assert bucket.try_take() == 0.0
    assert bucket.try_take() > 0
    clock.advance(60)
    assert [bucket.try_take() for _ in range(3)][:2] == [0.0, 0.0]
    assert bucket.try_take() > 0


def test_refusal_takes_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.try_take() == 0.0
    for _ in range(5):
        assert bucket.try_take() == pytest.approx(1.0)
    clock.advance(1.0)
    assert bucket.try_take() == 0.0


def test_wall_clock_jump_does_not_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    bucket.try_take()
    clock.set_wall_ms(clock.wall_ms() + 3_600_000)
    assert bucket.try_take() > 0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_rejects_nonsense(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate=rate, burst=burst, clock=FakeClock())


def test_buckets_are_per_caller_and_bounded() -> None:
    clock = FakeClock()
    buckets = ratelimit.Buckets(rate=1.0, burst=3, clock=clock, max_callers=2)
    assert buckets.bucket("a").try_take(3) == 0.0
    assert buckets.bucket("a").try_take(1) > 0
    assert buckets.bucket("b").try_take(3) == 0.0  # b is not charged for a
    assert buckets.bucket("a").remaining == 0
    buckets.bucket("c")  # evicts the least recently used: b
    assert len(buckets) == 2
    assert buckets.bucket("a").remaining == 0  # a was kept
    assert buckets.bucket("b").remaining == 3  # b starts over
