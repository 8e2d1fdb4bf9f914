"""The Snowflake state machine, driven by a FakeClock (nothing sleeps for real)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nebula_id import errors
from nebula_id.clock import FakeClock, SystemClock
from nebula_id.core.layout import SnowflakeLayout
from nebula_id.core.snowflake import SnowflakeGenerator

START_MS = 1_750_000_000_000
MARK_AHEAD_MS = 2_000


def make(
    clock: FakeClock | SystemClock,
    *,
    layout: SnowflakeLayout | None = None,
    datacenter: int = 3,
    worker: int = 7,
    tolerance_ms: int = 5,
    require_lease: bool = False,
    mark: bool = True,
) -> SnowflakeGenerator:
    gen = SnowflakeGenerator(
        layout or SnowflakeLayout(),
        datacenter=datacenter,
        worker=worker,
        clock=clock,
        tolerance_ms=tolerance_ms,
        require_lease=require_lease,
    )
    if mark:
        gen.allow_until(clock.wall_ms() + MARK_AHEAD_MS)
    return gen


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_ms=START_MS)


def test_ids_carry_timestamp_node_and_sequence(clock: FakeClock) -> None:
    gen = make(clock)
    first, second = gen.next_id(), gen.next_id()
    parsed = gen.layout.parse(first)
    assert (parsed.timestamp_ms, parsed.datacenter, parsed.worker, parsed.sequence) == (
        START_MS,
        3,
        7,
        0,
    )
    assert gen.layout.parse(second).sequence == 1
    assert gen.last_timestamp_ms == START_MS


def test_new_millisecond_restarts_the_sequence(clock: FakeClock) -> None:
    gen = make(clock)
    a = gen.next_id()
    clock.advance(0.001)
    b = gen.next_id()
    assert b > a
    assert gen.layout.parse(b).sequence == 0
    assert gen.layout.parse(b).timestamp_ms == START_MS + 1


def test_sequence_overflow_waits_for_the_next_millisecond(clock: FakeClock) -> None:
    layout = SnowflakeLayout(timestamp_bits=41, datacenter_bits=5, worker_bits=14, sequence_bits=3)
    gen = make(clock, layout=layout)
    ids = [gen.next_id() for _ in range(9)]
    assert ids == sorted(set(ids))
    parsed = [layout.parse(i) for i in ids]
    assert [p.sequence for p in parsed] == [0, 1, 2, 3, 4, 5, 6, 7, 0]
    assert parsed[-1].timestamp_ms == START_MS + 1
    assert clock.slept == [0.001]


def test_batch_fills_whole_milliseconds(clock: FakeClock) -> None:
    gen = make(clock)
    ids = gen.next_ids(10_000)
    assert len(ids) == 10_000
    assert all(a < b for a, b in itertools.pairwise(ids))
    stamps = [gen.layout.parse(i).timestamp_ms for i in ids]
    assert stamps.count(START_MS) == 4096
    assert stamps.count(START_MS + 1) == 4096
    assert stamps.count(START_MS + 2) == 10_000 - 2 * 4096
    assert clock.slept == [0.001, 0.001]


def test_batch_continues_after_single_ids(clock: FakeClock) -> None:
    gen = make(clock)
    single = gen.next_id()
    batch = gen.next_ids(5)
    after = gen.next_id()
    assert [single, *batch, after] == sorted({single, *batch, after})
    assert gen.layout.parse(after).sequence == 6


def test_batch_count_must_be_positive(clock: FakeClock) -> None:
    with pytest.raises(errors.InvalidArgument, match="at least 1"):
        make(clock).next_ids(0)


def test_rollback_within_tolerance_waits(clock: FakeClock) -> None:
    gen = make(clock, tolerance_ms=5)
    clock.advance(0.010)
    before = gen.next_id()
    clock.set_wall_ms(START_MS + 10 - 4)
    after = gen.next_id()
    assert after > before
    assert clock.slept == [0.004]
    assert gen.clock_wait_ms_total == 4
    assert gen.layout.parse(after).timestamp_ms == START_MS + 10


def test_rollback_beyond_tolerance_raises_and_issues_nothing(clock: FakeClock) -> None:
    gen = make(clock, tolerance_ms=5)
    clock.advance(0.100)
    last = gen.next_id()
    clock.set_wall_ms(START_MS + 100 - 6)
    with pytest.raises(errors.ClockMovedBackward) as caught:
        gen.next_id()
    assert caught.value.behind_ms == 6
    assert caught.value.reason == "clock_moved_backward"
    assert caught.value.http_status == 503
    with pytest.raises(errors.ClockMovedBackward):
        gen.next_ids(10)
    assert clock.slept == []
    assert gen.last_timestamp_ms == START_MS + 100
    # Once the clock catches up, IDs continue above the last one.
    clock.set_wall_ms(START_MS + 101)
    assert gen.next_id() > last


def test_zero_tolerance_refuses_any_rollback(clock: FakeClock) -> None:
    gen = make(clock, tolerance_ms=0)
    clock.advance(0.005)
    gen.next_id()
    clock.set_wall_ms(START_MS + 4)
    with pytest.raises(errors.ClockMovedBackward):
        gen.next_id()


def test_nothing_is_issued_before_a_mark_is_persisted(clock: FakeClock) -> None:
    gen = make(clock, mark=False)
    with pytest.raises(errors.NotReady, match="no high-water mark"):
        gen.next_id()
    with pytest.raises(errors.NotReady):
        gen.next_ids(3)
    gen.allow_until(START_MS + 10)
    assert gen.layout.parse(gen.next_id()).timestamp_ms == START_MS


def test_ids_never_pass_the_mark(clock: FakeClock) -> None:
    gen = make(clock, mark=False)
    gen.allow_until(START_MS + 5)
    gen.next_id()
    clock.set_wall_ms(START_MS + 5)
    assert gen.layout.parse(gen.next_id()).timestamp_ms == START_MS + 5
    clock.set_wall_ms(START_MS + 6)
    with pytest.raises(errors.NotReady, match="passed the high-water mark"):
        gen.next_id()
    gen.allow_until(START_MS + 1_000)
    assert gen.layout.parse(gen.next_id()).timestamp_ms == START_MS + 6


def test_mark_never_lowers(clock: FakeClock) -> None:
    gen = make(clock, mark=False)
    gen.allow_until(START_MS + 1_000)
    gen.allow_until(START_MS)
    assert gen.high_water_mark_ms == START_MS + 1_000
    clock.advance(0.5)
    gen.next_id()


def test_batch_stops_at_the_mark(clock: FakeClock) -> None:
    gen = make(clock, mark=False)
    gen.allow_until(START_MS)
    with pytest.raises(errors.NotReady):
        gen.next_ids(5_000)  # would need a second millisecond


def test_restart_after_rollback_waits_past_the_old_mark(clock: FakeClock) -> None:
    old = make(clock)
    clock.advance(1.0)
    issued = old.next_ids(100)
    old_mark = START_MS + MARK_AHEAD_MS  # what the old holder persisted
    # The process dies, the clock is stepped back a minute, a new holder starts.
    clock.set_wall_ms(START_MS - 60_000)
    new = make(clock, mark=False)
    new.wait_past(old_mark)
    new.allow_until(old_mark + MARK_AHEAD_MS)
    with pytest.raises(errors.NotReady, match="previous holder") as caught:
        new.next_id()
    assert caught.value.retry_after == pytest.approx((old_mark - clock.wall_ms() + 1) / 1000)
    clock.set_wall_ms(old_mark)
    with pytest.raises(errors.NotReady):
        new.next_ids(3)
    clock.set_wall_ms(old_mark + 1)
    fresh = new.next_ids(100)
    assert min(fresh) > max(issued)
    assert new.layout.parse(fresh[0]).timestamp_ms == old_mark + 1


def test_wait_past_below_last_timestamp_changes_nothing(clock: FakeClock) -> None:
    gen = make(clock)
    clock.advance(0.050)
    a = gen.next_id()
    gen.wait_past(START_MS + 10)
    b = gen.next_id()
    assert b == a + 1


def test_lease_is_required_when_configured(clock: FakeClock) -> None:
    gen = make(clock, require_lease=True)
    with pytest.raises(errors.LeaseLost, match="no etcd lease"):
        gen.next_id()
    gen.set_lease_deadline(clock.monotonic() + 3.0)
    assert gen.next_id() > 0
    assert gen.next_ids(2)
    clock.advance(3.0)
    with pytest.raises(errors.LeaseLost) as caught:
        gen.next_id()
    assert caught.value.reason == "lease_lost"
    with pytest.raises(errors.LeaseLost):
        gen.next_ids(5)
    gen.set_lease_deadline(None)
    with pytest.raises(errors.LeaseLost):
        gen.next_id()


def test_lease_is_ignored_when_not_required(clock: FakeClock) -> None:
    gen = make(clock, require_lease=False)
    gen.set_lease_deadline(clock.monotonic() - 1)
    assert gen.next_id() > 0


def test_node_must_fit_the_layout(clock: FakeClock) -> None:
    with pytest.raises(errors.InvalidLayout, match="worker ID 32 does not fit in 5 bits"):
        make(clock, worker=32)
    with pytest.raises(errors.InvalidLayout, match="datacenter ID -1"):
        make(clock, datacenter=-1)
    with pytest.raises(errors.InvalidLayout, match="tolerance"):
        make(clock, tolerance_ms=-1)


def test_clock_before_epoch_issues_nothing(clock: FakeClock) -> None:
    layout = SnowflakeLayout(epoch_ms=START_MS + 1_000)
    gen = make(clock, layout=layout)
    with pytest.raises(errors.NotReady, match="before the layout's epoch"):
        gen.next_id()


def test_exhausted_timestamp_bits_issue_nothing(clock: FakeClock) -> None:
    layout = SnowflakeLayout(
        timestamp_bits=30, datacenter_bits=5, worker_bits=16, sequence_bits=12, epoch_ms=0
    )
    gen = make(clock, layout=layout)
    with pytest.raises(errors.NotReady, match="run out"):
        gen.next_id()


def test_many_ids_across_jumps_strictly_increase(clock: FakeClock) -> None:
    gen = make(clock)
    gen.allow_until(START_MS + 10**7)
    seen: list[int] = []
    for i in range(2_000):
        if i % 50 == 0:
            clock.advance(0.003)
        if i % 70 == 0:
            clock.set_wall_ms(clock.wall_ms() - 2)  # small rollbacks, within tolerance
        seen.extend(gen.next_ids(1 + i % 7) if i % 3 else [gen.next_id()])
    assert all(a < b for a, b in itertools.pairwise(seen))


def test_info_reports_state(clock: FakeClock) -> None:
    gen = make(clock, require_lease=True)
    gen.set_lease_deadline(clock.monotonic() + 2.5)
    gen.next_id()
    info = gen.info()
    assert info["datacenter"] == 3
    assert info["worker"] == 7
    assert info["last_timestamp_ms"] == START_MS
    assert info["high_water_mark_ms"] == START_MS + MARK_AHEAD_MS
    assert info["lease_remaining_s"] == pytest.approx(2.5)
    assert gen.datacenter == 3
    assert gen.worker == 7


class JumpyClock(FakeClock):
    """A wall clock that moves 3 ms on every read, like a process that keeps being descheduled."""

    def wall_ms(self) -> int:
        now = super().wall_ms()
        self.advance(0.003)
        return now


def test_batch_uses_milliseconds_that_passed_during_the_call() -> None:
    clock = JumpyClock(wall_ms=START_MS)
    gen = make(clock)
    gen.allow_until(START_MS + 10_000)
    started = clock.wall_ms() + 3  # the next read
    ids = gen.next_ids(3 * 4096)
    stamps = sorted({gen.layout.parse(i).timestamp_ms for i in ids})
    assert stamps == [started, started + 1, started + 2]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert max(stamps) <= clock.wall_ms()
    # A later call does not reach back before its own start.
    later = gen.next_ids(1)
    assert gen.layout.parse(later[0]).timestamp_ms > started + 2 + 3


operations = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 20)),
        st.tuples(st.just("back"), st.integers(1, 30)),
        st.tuples(st.just("mark"), st.integers(-50, 100)),
        st.tuples(st.just("one"), st.just(0)),
        st.tuples(st.just("many"), st.integers(1, 9000)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(operations)
@example([("advance", 25), ("many", 1)])
@example([("advance", 25), ("one", 0)])
@example([("one", 0), ("back", 3), ("many", 5000), ("back", 10), ("one", 0)])
def test_any_history_issues_unique_increasing_ids_under_the_mark(
    ops: list[tuple[str, int]],
) -> None:
    clock = FakeClock(wall_ms=START_MS)
    gen = make(clock, mark=False)
    mark = START_MS + 20
    gen.allow_until(mark)
    issued: list[int] = []
    for op, arg in ops:
        if op == "advance":
            clock.advance(arg / 1000)
        elif op == "back":
            clock.set_wall_ms(clock.wall_ms() - arg)
        elif op == "mark":
            mark = max(mark, clock.wall_ms() + arg)
            gen.allow_until(clock.wall_ms() + arg)
        else:
            try:
                issued.extend(gen.next_ids(arg) if op == "many" else [gen.next_id()])
            except errors.Unavailable:
                continue
            # The newest ID never passes the mark persisted when it was issued.
            assert gen.layout.parse(issued[-1]).timestamp_ms <= mark
    assert all(a < b for a, b in itertools.pairwise(issued))


def test_real_clock_overflow_spins_into_the_next_millisecond() -> None:
    clock = SystemClock()
    gen = make(clock)
    before = clock.wall_ms()
    ids = gen.next_ids(3 * 4096 + 5)
    ids += [gen.next_id() for _ in range(5000)]
    after = clock.wall_ms()
    assert all(a < b for a, b in itertools.pairwise(ids))
    stamps = [gen.layout.parse(i).timestamp_ms for i in ids]
    assert before <= min(stamps) <= max(stamps) <= after
    assert len(set(stamps)) >= 4  # at least four milliseconds were needed


class StalledWallClock(FakeClock):
    """A wall clock stuck on one value while monotonic time runs: only `sleep` moves it."""

    def monotonic(self) -> float:
        self._monotonic += 0.0001
        return self._monotonic


def test_a_stalled_wall_clock_is_slept_on_rather_than_spun_on_forever() -> None:
    clock = StalledWallClock(wall_ms=START_MS)
    layout = SnowflakeLayout(timestamp_bits=41, datacenter_bits=5, worker_bits=16, sequence_bits=1)
    gen = make(clock, layout=layout)
    ids = gen.next_ids(4)
    assert [layout.parse(i).timestamp_ms - START_MS for i in ids] == [0, 0, 1, 1]
    assert clock.slept == [0.001]
