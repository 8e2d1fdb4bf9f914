"""The pure rules of holding a worker ID: candidates, and the stored records.

Kept apart from the I/O so the rules that decide safety (which ID to try next,
the floor a new holder waits past) can be unit-tested without etcd; the lease's
own timing (when it stops being proven, how far ahead the high-water mark runs)
is `nebula_id.core.lease`.  Nothing here imports aiohttp or reads the real clock.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Collection

from nebula_id.core import jsontypes
from nebula_id.core import layout as layouts
from nebula_id.core.jsontypes import JsonObject

CLAIM_ATTEMPTS = 10
"""Create-if-absent attempts per claim round before pausing and reporting contention."""


def free_workers(taken: Collection[int], capacity: int) -> list[int]:
    """Worker IDs below `capacity` that nobody claims, lowest first."""
    return [worker for worker in range(capacity) if worker not in taken]


def candidate(free: list[int], attempt: int, rng: random.Random) -> int:
    """The worker ID to try on `attempt` (0-based).

    The first try takes the lowest free ID, as the contract says.  After losing a race
    the contenders spread out over the lowest 2**attempt free IDs, so twenty sidecars
    starting at once settle in a few rounds instead of twenty.
    """
    if attempt == 0 or len(free) == 1:
        return free[0]
    return free[rng.randrange(min(len(free), 2**attempt))]


def worker_of_key(key: str) -> int | None:
    """The worker ID at the end of a claim key, or None for a foreign key."""
    tail = key.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimRecord:
    """The value of `workers/{dc}/{worker}`: who holds the ID (for people and the operator)."""

    pod: str | None
    pod_uid: str | None
    namespace: str | None
    host: str
    pid: int
    lease: int
    claimed_at_ms: int

    def to_json(self) -> bytes:
        doc = {
            "pod": self.pod,
            "podUid": self.pod_uid,
            "namespace": self.namespace,
            "host": self.host,
            "pid": self.pid,
            "lease": f"{self.lease:x}",
            "claimedAt": layouts.format_epoch(self.claimed_at_ms),
            "claimedAtMs": self.claimed_at_ms,
        }
        return json.dumps(doc, sort_keys=True).encode("utf-8")


@dataclasses.dataclass(frozen=True, slots=True)
class HighWaterMark:
    """The value of `clock/{dc}/{worker}`: no ID of this worker has a later timestamp."""

    ms: int
    lease: int = 0
    """The lease of the holder that wrote it (0 when unknown)."""
    generation: int = 0
    """The life of the pool it was written in (`core.identity`; 0 when unknown)."""

    def to_json(self) -> bytes:
        doc: JsonObject = {
            "ms": self.ms,
            "lease": f"{self.lease:x}",
            "at": layouts.format_epoch(self.ms),
        }
        if self.generation:
            doc["generation"] = self.generation
        return json.dumps(doc, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> HighWaterMark:
        """Parse a stored mark; a bare integer (milliseconds) is accepted too.

        An unreadable mark is not guessed at: the caller fails closed.
        """
        text = raw.decode("utf-8").strip()
        if text.isdigit():
            return cls(ms=int(text))
        doc = jsontypes.as_object(json.loads(text))
        ms = None if doc is None else doc.get("ms")
        if doc is None or not isinstance(ms, int):
            raise ValueError(f"not a high-water mark: {text[:100]!r}")
        lease = doc.get("lease", "0")
        generation = doc.get("generation", 0)
        return cls(
            ms=ms,
            lease=int(lease, 16) if isinstance(lease, str) and lease else 0,
            generation=generation if isinstance(generation, int) else 0,
        )


def floor_for_new_holder(
    mark: HighWaterMark | None,
    *,
    previous_lease: int | None,
    previous_last_ms: int | None,
) -> int:
    """The timestamp a new holder must wait past before issuing.

    The stored mark, or this process's own last timestamp of the same worker ID when
    that is higher (a mark that was lost or lowered must not let it repeat its own IDs).
    When the mark was written under our own previous lease of this worker ID, nobody
    else has issued with it since (every holder persists a mark before its first ID),
    so our own last timestamp is the true floor and a re-claim after an etcd outage
    does not wait out the whole horizon.
    """
    own = previous_last_ms if previous_lease is not None and previous_last_ms is not None else 0
    if mark is None:
        return own
    if mark.lease == previous_lease and previous_last_ms is not None and own <= mark.ms:
        return own
    return max(mark.ms, own)
