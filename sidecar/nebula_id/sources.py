"""The seams between the HTTP layer and where IDs come from.

The sidecar's routes only know these Protocols.  Standalone mode fills them
from the data dir (a high-water-mark file, SQLite segments); cluster mode fills
them from etcd (a leased worker ID, a high-water mark in etcd) and PostgreSQL
(segment ranges, with datacenter failover).  Each implementation is created in
one aiohttp `cleanup_ctx` and stored under a typed `AppKey`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from nebula_id.core import layout as layouts
from nebula_id.core.jsontypes import JsonValue


class SnowflakeSource(Protocol):
    """Hands out Snowflake IDs while it can prove they are safe."""

    @property
    def layout(self) -> layouts.SnowflakeLayout: ...

    def next_id(self) -> int:
        """One ID, or raise an `errors.Unavailable` subclass (never a maybe-duplicate)."""

    def next_ids(self, count: int) -> list[int]:
        """`count` strictly increasing IDs, or raise as `next_id` does."""

    def ready_reason(self) -> str | None:
        """None when IDs can be served now; otherwise a 503 reason such as `lease_lost`."""

    def info(self) -> Mapping[str, JsonValue]:
        """Datacenter, worker and lease state, for `/v1/info`."""


class SegmentSource(Protocol):
    """Hands out segment IDs per tag from double-buffered ranges."""

    def tags(self) -> list[str]: ...

    def take_one(self, tag: str) -> int | None:
        """One ID of `tag` if one is buffered (no await), else None; `UnknownTag` as below."""

    async def next_ids(self, tag: str, count: int) -> list[int]:
        """`count` increasing IDs of `tag`; `UnknownTag` or `SegmentExhausted` otherwise."""

    def ready_reason(self) -> str | None: ...

    def info(self) -> Mapping[str, JsonValue]:
        """Per tag: current range, remaining, next ready, step, datacenter."""
