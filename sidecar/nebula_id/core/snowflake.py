"""The Snowflake state machine: one (datacenter, worker) pair issuing 63-bit IDs.

This is the part that must never hand out a duplicate, so it refuses rather
than guesses.  It issues an ID only when all of these hold:

* the timestamp is at or below the persisted high-water mark (`allow_until`),
  so a restart can always tell which timestamps may already be used;
* the clock has passed a previous holder's mark (`wait_past`), and the last
  timestamp of the generator the pool replaces (`issue_after_ms`);
* the clock has not gone back by more than the tolerance since the last ID;
* with ``require_lease``, the etcd lease is provably alive (`set_lease_deadline`):
  checked before each millisecond is used, again after every wait (a process can be
  frozen inside one), and once more before a batch is returned.

It is pure: time comes from the injected `Clock`, and the etcd and file
adapters only move the mark and the deadline.  The hot path is kept tight (one
wall-clock read per ID, a monotonic read only when a lease is required); every
unusual case goes through `_slow_next`.  It is not thread-safe: one event
loop (the sidecar's) owns a generator.
"""

from __future__ import annotations

from nebula_id import clock as clocks
from nebula_id import errors
from nebula_id.core import layout as layouts
from nebula_id.core.jsontypes import JsonObject

# Retries of a rollback wait before giving up: a clock that is still behind
# after waiting out the gap is moving backwards again, and we stop trusting it.
_MAX_ROLLBACK_WAITS = 3
# Wall-clock reads between checks of the monotonic clock while spinning for
# the next millisecond.
_SPIN_READS = 64
# After this long (monotonic seconds) without the wall clock moving, sleep.
_SPIN_LIMIT_S = 0.002


class SnowflakeGenerator:
    """Issues strictly increasing Snowflake IDs for one node, or raises `errors.Unavailable`."""

    __slots__ = (
        "_base",
        "_clock",
        "_clock_wait_ms_total",
        "_datacenter",
        "_epoch_ms",
        "_floor_ms",
        "_last_ts",
        "_layout",
        "_lease_deadline",
        "_limit_ms",
        "_mark_ms",
        "_max_seq",
        "_node",
        "_previous_generator_ms",
        "_require_lease",
        "_seq",
        "_tolerance_ms",
        "_ts_shift",
        "_wall_ms",
        "_worker",
    )

    def __init__(
        self,
        layout: layouts.SnowflakeLayout,
        *,
        datacenter: int,
        worker: int,
        clock: clocks.Clock,
        tolerance_ms: int = 5,
        require_lease: bool = False,
        issue_after_ms: int | None = None,
    ) -> None:
        layout.check_node(datacenter=datacenter, worker=worker)
        if tolerance_ms < 0:
            raise errors.InvalidLayout(f"tolerance_ms must not be negative, got {tolerance_ms}")
        self._layout = layout
        self._datacenter = datacenter
        self._worker = worker
        self._clock = clock
        self._wall_ms = clock.wall_ms
        self._tolerance_ms = tolerance_ms
        self._require_lease = require_lease
        self._lease_deadline: float | None = None
        self._epoch_ms = layout.epoch_ms
        self._ts_shift = layout.timestamp_shift
        self._max_seq = layout.max_sequence
        self._node = layout.node_bits(datacenter=datacenter, worker=worker)
        # Nothing issued yet: the "last" millisecond is just before the epoch,
        # with its sequence used up, so the first ID always starts a new one.
        self._last_ts = layout.epoch_ms - 1
        self._seq = self._max_seq
        self._base = 0
        self._mark_ms = -1  # no high-water mark persisted yet
        self._floor_ms = -1  # no previous holder to wait past
        self._limit_ms = -1  # min(mark, last millisecond the layout can express)
        self._clock_wait_ms_total = 0.0
        # The pool's previous generator: every ID must carry a later timestamp.
        self._previous_generator_ms = -1 if issue_after_ms is None else issue_after_ms
        if issue_after_ms is not None:
            self.wait_past(issue_after_ms)

    # --- read-only state ---------------------------------------------------------

    @property
    def layout(self) -> layouts.SnowflakeLayout:
        return self._layout

    @property
    def datacenter(self) -> int:
        return self._datacenter

    @property
    def worker(self) -> int:
        return self._worker

    @property
    def last_timestamp_ms(self) -> int:
        """Newest timestamp used (Unix ms), at least a waited-past mark; 0 if none."""
        return self._last_ts if self._last_ts >= self._epoch_ms else 0

    @property
    def high_water_mark_ms(self) -> int | None:
        """The mark set by `allow_until`, or None before the first call."""
        return self._mark_ms if self._mark_ms >= 0 else None

    @property
    def clock_wait_ms_total(self) -> float:
        """Milliseconds spent waiting out small clock rollbacks (a metric)."""
        return self._clock_wait_ms_total

    # --- control, from the adapters ----------------------------------------------

    def allow_until(self, mark_ms: int) -> None:
        """Allow timestamps up to `mark_ms`, a mark that is already persisted.

        The mark never goes down: a lower value is ignored.
        """
        if mark_ms > self._mark_ms:
            self._mark_ms = mark_ms
            self._limit_ms = min(mark_ms, self._epoch_ms + self._layout.max_timestamp)

    def wait_past(self, mark_ms: int) -> None:
        """Issue nothing until the clock reads later than a previous holder's `mark_ms`."""
        if mark_ms > self._floor_ms:
            self._floor_ms = mark_ms
        if mark_ms >= self._last_ts:
            # Every ID from now on must carry a later timestamp than the mark.
            self._last_ts = mark_ms
            self._seq = self._max_seq

    def set_lease_deadline(self, deadline: float | None) -> None:
        """The monotonic time until which the lease is proven alive (None: not proven)."""
        self._lease_deadline = deadline

    # --- issuing -------------------------------------------------------------------

    def next_id(self) -> int:
        """One ID, or an `errors.Unavailable` subclass and no ID."""
        if self._require_lease:
            self._check_lease()
        now = self._wall_ms()
        if now > self._last_ts and now <= self._limit_ms:
            self._last_ts = now
            self._seq = 0
            self._base = base = ((now - self._epoch_ms) << self._ts_shift) | self._node
            return base
        if now == self._last_ts and self._seq < self._max_seq:
            self._seq = seq = self._seq + 1
            return self._base + seq
        ts, seq = self._slow_next(now)
        self._use(ts, seq)
        return self._base + seq

    def next_ids(self, count: int) -> list[int]:
        """`count` strictly increasing IDs, filling whole milliseconds at a time.

        Milliseconds that pass while the call runs (say, the process was
        descheduled) are used in order rather than skipped, so every ID still
        carries a timestamp from within the call.  On an error nothing is
        returned; IDs already reserved become a gap.
        """
        if count < 1:
            raise errors.InvalidArgument(f"count must be at least 1, got {count}")
        ids: list[int] = []
        extend = ids.extend
        max_seq = self._max_seq
        remaining = count
        started = -1
        while remaining:
            if self._require_lease:
                self._check_lease()
            now = self._wall_ms()
            if started < 0:
                started = now
            if now > self._last_ts and now <= self._limit_ms:
                # Any millisecond in (last, now] is unused and within the mark.
                ts = self._last_ts + 1 if self._last_ts >= started else now
                seq = 0
            elif now == self._last_ts and self._seq < max_seq:
                ts, seq = now, self._seq + 1
            else:
                ts, seq = self._slow_next(now)
            taken = min(remaining, max_seq + 1 - seq)
            self._use(ts, seq + taken - 1)
            first = self._base + seq
            extend(range(first, first + taken))
            remaining -= taken
        if self._require_lease:
            # The batch took time (and maybe waits): nothing leaves after the deadline.
            self._check_lease()
        return ids

    def info(self) -> JsonObject:
        """State for `/v1/info` and debugging."""
        deadline = self._lease_deadline
        return {
            "datacenter": self._datacenter,
            "worker": self._worker,
            "last_timestamp_ms": self.last_timestamp_ms,
            "high_water_mark_ms": self.high_water_mark_ms,
            "wait_past_ms": self._floor_ms if self._floor_ms >= 0 else None,
            "clock_backward_tolerance_ms": self._tolerance_ms,
            "clock_wait_ms_total": self._clock_wait_ms_total,
            "require_lease": self._require_lease,
            "lease_remaining_s": (
                None if deadline is None else max(0.0, deadline - self._clock.monotonic())
            ),
        }

    # --- the slow path -------------------------------------------------------------

    def _use(self, ts: int, seq: int) -> None:
        """Record that `seq` is the last sequence used in millisecond `ts`."""
        if ts != self._last_ts:
            self._base = ((ts - self._epoch_ms) << self._ts_shift) | self._node
            self._last_ts = ts
        self._seq = seq

    def _check_lease(self) -> None:
        deadline = self._lease_deadline
        if deadline is None:
            raise errors.LeaseLost("no etcd lease is held for this worker ID")
        if self._clock.monotonic() >= deadline:
            raise errors.LeaseLost(
                "the etcd lease can no longer be proven valid (no keepalive answer in time)"
            )

    def _recheck_lease(self) -> None:
        """After a wait: the process may have been frozen in it past the lease deadline."""
        if self._require_lease:
            self._check_lease()

    def _slow_next(self, now: int) -> tuple[int, int]:
        """The timestamp and sequence of the next ID when the fast path cannot tell."""
        rollback_waits = 0
        while True:
            floor = self._floor_ms
            if now <= floor:
                to_go = floor - now + 1
                if floor == self._previous_generator_ms:
                    raise errors.NotReady(
                        f"waiting for the clock to pass {floor}, the last timestamp of the "
                        "generator this pool replaces (spec.snowflake.previousMaxId or "
                        f"previousStoppedAt; {to_go} ms to go)",
                        retry_after=to_go / 1000,
                    )
                raise errors.NotReady(
                    f"waiting for the clock to pass the previous holder's high-water mark "
                    f"{floor} ({to_go} ms to go)",
                    retry_after=to_go / 1000,
                )
            if now < self._epoch_ms:
                raise errors.NotReady(
                    f"the clock ({now}) reads before the layout's epoch ({self._epoch_ms})"
                )
            last = self._last_ts
            if now > last:
                self._check_limit(now)
                return now, 0
            if now == last:
                if self._seq < self._max_seq:
                    return now, self._seq + 1
                now = self._wait_next_ms(last)
                self._recheck_lease()
                continue
            behind = last - now
            if behind > self._tolerance_ms or rollback_waits >= _MAX_ROLLBACK_WAITS:
                raise errors.ClockMovedBackward(
                    f"the clock moved back {behind} ms (tolerance {self._tolerance_ms} ms); "
                    "no ID is issued until it catches up",
                    behind_ms=behind,
                    retry_after=max(behind / 1000, 0.001),
                )
            rollback_waits += 1
            self._clock.sleep(behind / 1000)
            self._clock_wait_ms_total += behind
            self._recheck_lease()
            now = self._wall_ms()

    def _check_limit(self, now: int) -> None:
        if now <= self._limit_ms:
            return
        if self._mark_ms < 0:
            raise errors.NotReady("no high-water mark has been persisted yet")
        if now > self._epoch_ms + self._layout.max_timestamp:
            raise errors.NotReady(
                f"the layout's {self._layout.timestamp_bits} timestamp bits have run out"
            )
        raise errors.NotReady(
            f"the clock ({now}) passed the high-water mark ({self._mark_ms}); "
            "the next mark is not persisted yet"
        )

    def _wait_next_ms(self, last: int) -> int:
        """Spin until the wall clock leaves millisecond `last`, sleeping if it is stuck.

        A frozen clock (monotonic time does not move, as in tests) or a wall clock
        that stalls for longer than `_SPIN_LIMIT_S` is moved on with `clock.sleep`.
        """
        wall = self._wall_ms
        monotonic = self._clock.monotonic
        started = monotonic()
        while True:
            for _ in range(_SPIN_READS):
                now = wall()
                if now != last:
                    return now
            elapsed = monotonic() - started
            if elapsed <= 0.0 or elapsed > _SPIN_LIMIT_S:
                self._clock.sleep(0.001)
                now = wall()
                if now != last:
                    return now
                started = monotonic()
