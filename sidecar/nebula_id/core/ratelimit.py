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
