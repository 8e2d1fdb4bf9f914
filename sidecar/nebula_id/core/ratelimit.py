"""A token bucket, pure: the sidecar's rate limit without any I/O.

The bucket refills at `rate` tokens per second up to `burst`.  Time comes from
the injected clock's monotonic reading, so a wall clock that jumps can neither
grant a burst nor lock callers out, and tests move time by hand.
"""

from __future__ import annotations

from nebula_id.clock import Clock


class TokenBucket:
    """`try_take()` returns 0.0 when a request may pass, else the seconds to wait."""

    __slots__ = ("_burst", "_clock", "_rate", "_tokens", "_updated")

    def __init__(self, *, rate: float, burst: int, clock: Clock) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock.monotonic()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return int(self._burst)

    def try_take(self, tokens: float = 1.0) -> float:
        """Take `tokens` if available; otherwise take nothing and say how long to wait."""
        now = self._clock.monotonic()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._updated = now
        if self._tokens >= tokens:
            self._tokens -= tokens
            return 0.0
        return (tokens - self._tokens) / self._rate

    @property
    def remaining(self) -> int:
        """Whole tokens left after the last `try_take` (not refilled since)."""
        return int(self._tokens)

    @property
    def full_in(self) -> float:
        """Seconds until the bucket is full again, from the last `try_take`."""
        return (self._burst - self._tokens) / self._rate


class Buckets:
    """One `TokenBucket` per caller (an API key, or a peer), at most `max_callers` kept.

    The least recently used bucket goes first when the table is full; a caller
    that comes back then starts from a full bucket, which costs at most one
    burst, and the table cannot grow without bound.
    """

    __slots__ = ("_buckets", "_burst", "_clock", "_max", "_rate")

    def __init__(self, *, rate: float, burst: int, clock: Clock, max_callers: int = 4096) -> None:
        TokenBucket(rate=rate, burst=burst, clock=clock)  # validates rate and burst
        self._rate, self._burst, self._clock, self._max = rate, burst, clock, max_callers
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, caller: str) -> TokenBucket:
        bucket = self._buckets.pop(caller, None)
        if bucket is None:
            if len(self._buckets) >= self._max:
                del self._buckets[next(iter(self._buckets))]
            bucket = TokenBucket(rate=self._rate, burst=self._burst, clock=self._clock)
        self._buckets[caller] = bucket  # most recently used last
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)
