"""Request counters kept as plain integers on the hot path.

Prometheus client counters take a lock per increment; the sidecar counts in
plain attributes instead and a collector (`nebula_id.http.metrics`) reads them
at scrape time, so serving an ID costs one attribute increment.
"""

from __future__ import annotations

import collections


class RequestStats:
    """IDs issued and errors answered, by algorithm and by code/reason."""

    __slots__ = ("batch_ids", "batches", "errors", "singles")

    def __init__(self) -> None:
        # Single-ID requests are the hot path: one dict increment each.
        self.singles: collections.Counter[str] = collections.Counter()
        self.batches: collections.Counter[str] = collections.Counter()
        self.batch_ids: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[tuple[int, str, str]] = collections.Counter()

    def served(self, algorithm: str, count: int) -> None:
        """A batch request (single IDs go straight to `singles`)."""
        self.batches[algorithm] += 1
        self.batch_ids[algorithm] += count

    @property
    def ids(self) -> dict[str, int]:
        """IDs issued per algorithm."""
        return dict(self.singles + self.batch_ids)

    @property
    def requests(self) -> dict[str, int]:
        """Successful ID requests per algorithm."""
        return dict(self.singles + self.batches)

    def failed(self, status: int, code: str, reason: str) -> None:
        self.errors[(status, code, reason)] += 1


SERVER = "nebula-id"
"""The ``Server`` header of every answer: no versions to fingerprint (aiohttp's
default names Python's and aiohttp's)."""
