"""The arithmetic of an etcd lease held by this process: until when it is proven.

A lease is proven alive from the moment a keepalive (or the grant) was *sent*,
for its TTL minus a safety margin: etcd counts the TTL from when the request
arrives, never earlier, so the holder always stops believing in its lease
before etcd can free what the lease holds.  Both lease holders use it: a
sidecar's worker ID claim (`nebula_id.etcd.worker`) and the operator's
leadership (`nebula_id_operator.leader`).

Pure: times are monotonic seconds handed in by the caller; no clock, no I/O.
"""

from __future__ import annotations

import dataclasses

from nebula_id import errors

MIN_MARGIN_S = 0.5
"""The smallest margin: below it a loaded process or a short GC pause could outlive the lease."""


def default_margin(ttl_seconds: float) -> float:
    """The safety margin for a TTL: a fifth of it, at least `MIN_MARGIN_S`."""
    return max(MIN_MARGIN_S, ttl_seconds / 5)


def deadline(sent_monotonic: float, ttl_seconds: float, margin: float) -> float:
    """When a lease renewed by a request sent at `sent_monotonic` stops being proven."""
    return sent_monotonic + ttl_seconds - margin


def proven(deadline_monotonic: float | None, now_monotonic: float) -> bool:
    """True while `now` is before the deadline (None: no lease held)."""
    return deadline_monotonic is not None and now_monotonic < deadline_monotonic


def remaining(deadline_monotonic: float, now_monotonic: float) -> float:
    """Seconds left until the deadline, never negative."""
    return max(0.0, deadline_monotonic - now_monotonic)


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseTiming:
    """How a lease of `ttl_seconds` is renewed and until when it is proven.

    The lease is proven until `send + ttl - margin`, where `send` is the monotonic
    time the keepalive request *left* (the server renewed it no earlier).  It is
    renewed `renewals` times per TTL, so a few renewals may fail before the
    deadline passes.

    A worker ID's high-water mark runs `horizon` ahead of the wall clock and is
    refreshed on every renewal, so while etcd is unreachable the lease deadline
    (ttl - margin after the last renewal) comes before the mark runs out
    (ttl + interval after it): the 503 reason is `lease_lost`.
    """

    ttl_seconds: int
    renewals: int = 4
    """Renewals per TTL: the interval between two is ``ttl / renewals``."""
    margin_seconds: float | None = None
    """The safety margin; None: `default_margin` of the TTL."""

    def __post_init__(self) -> None:
        if self.ttl_seconds < 1:
            raise errors.InvalidArgument(f"a lease TTL is at least 1 s, got {self.ttl_seconds}")
        if self.renewals < 2:
            raise errors.InvalidArgument(
                f"a lease needs at least 2 renewals per TTL, got {self.renewals}"
            )
        if self.margin_seconds is not None and not 0 <= self.margin_seconds < self.ttl_seconds:
            raise errors.InvalidArgument(
                f"a lease margin must be in [0, ttl={self.ttl_seconds}), got {self.margin_seconds}"
            )

    @property
    def margin(self) -> float:
        """Seconds subtracted from the TTL."""
        if self.margin_seconds is not None:
            return self.margin_seconds
        return default_margin(self.ttl_seconds)

    @property
    def interval(self) -> float:
        """Seconds between two renewals."""
        return self.ttl_seconds / self.renewals

    @property
    def horizon_ms(self) -> int:
        """How far a persisted high-water mark runs ahead of the clock."""
        return round((self.ttl_seconds + self.interval) * 1000)

    def deadline(self, sent_monotonic: float, *, ttl_seconds: float | None = None) -> float:
        """The deadline after a renewal sent at `sent_monotonic`.

        `ttl_seconds`: the TTL etcd answered with, when it may differ from ours.
        """
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        return deadline(sent_monotonic, ttl, self.margin)
