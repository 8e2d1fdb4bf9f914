"""The lease arithmetic both holders share: a worker ID claim and the operator's leadership."""

from __future__ import annotations

import pytest

from nebula_id import errors
from nebula_id.core import lease as leases


@pytest.mark.parametrize("ttl", [2, 3, 10, 30, 300])
def test_the_lease_deadline_comes_before_the_mark_runs_out(ttl: int) -> None:
    timing = leases.LeaseTiming(ttl)
    # The last successful tick wrote the mark at about the time it sent the keepalive;
    # the deadline of that tick must fall before that mark is reached.
    sent = 1000.0
    deadline_after_tick = timing.deadline(sent) - sent
    mark_after_tick = timing.horizon_ms / 1000
    assert deadline_after_tick < mark_after_tick
    assert deadline_after_tick == pytest.approx(ttl - timing.margin)
    assert 0 < timing.interval < ttl - timing.margin  # a renewal always lands in time
    assert timing.margin >= 0.5


def test_timings_for_the_default_ttl() -> None:
    timing = leases.LeaseTiming(10)
    assert timing.margin == 2.0
    assert timing.interval == 2.5
    assert timing.horizon_ms == 12_500
    assert timing.deadline(50.0) == 58.0


def test_the_margin_is_a_fifth_of_the_ttl_but_never_below_half_a_second() -> None:
    assert leases.default_margin(10) == 2.0
    assert leases.default_margin(2) == 0.5
    assert leases.default_margin(1) == 0.5


def test_the_leaders_timing_renews_three_times_per_ttl_with_its_own_margin() -> None:
    timing = leases.LeaseTiming(6, renewals=3, margin_seconds=0.25)
    assert timing.interval == 2.0
    assert timing.margin == 0.25
    assert timing.deadline(100.0) == 105.75


def test_the_deadline_follows_the_ttl_etcd_answered() -> None:
    timing = leases.LeaseTiming(5)
    # etcd may grant or renew for another TTL than asked; the answer counts.
    assert timing.deadline(10.0, ttl_seconds=3) == 10.0 + 3 - 1.0
    assert leases.deadline(10.0, 3, 1.0) == 12.0


def test_a_lease_is_proven_strictly_before_its_deadline() -> None:
    assert leases.proven(10.0, 9.999)
    assert not leases.proven(10.0, 10.0)
    assert not leases.proven(10.0, 11.0)
    assert not leases.proven(None, 0.0)


def test_the_time_remaining_never_goes_negative() -> None:
    assert leases.remaining(10.0, 7.5) == 2.5
    assert leases.remaining(10.0, 10.0) == 0.0
    assert leases.remaining(10.0, 12.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ttl_seconds": 0}, "TTL is at least 1 s"),
        ({"ttl_seconds": 5, "renewals": 1}, "at least 2 renewals"),
        ({"ttl_seconds": 5, "margin_seconds": -0.1}, "margin must be in"),
        ({"ttl_seconds": 5, "margin_seconds": 5.0}, "margin must be in"),
    ],
)
def test_an_unsafe_timing_is_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=match):
        leases.LeaseTiming(**kwargs)  # type: ignore[arg-type]
