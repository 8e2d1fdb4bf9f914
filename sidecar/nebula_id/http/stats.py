"""Request counters kept as plain integers on the hot path.

Prometheus client counters take a lock per increment; the sidecar counts in
plain attributes instead and a collector (`nebula_id.http.metrics`) reads them
at scrape time, so serving an ID costs one attribute increment.
"""

from __future__ import annotations

import collections


class RequestStats:
    """IDs issued and errors answered, by algorithm and by code/reason."""

    __slots__ = ("errors", "ids", "requests")

    def __init__(self) -> None:
        self.ids: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[tuple[int, str, str]] = collections.Counter()

    def served(self, algorithm: str, count: int) -> None:
        self.ids[algorithm] += count
        self.requests[algorithm] += 1

    def failed(self, status: int, code: str, reason: str) -> None:
        self.errors[(status, code, reason)] += 1
