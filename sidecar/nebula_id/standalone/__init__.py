"""Standalone mode, the embedded default: one node, all state in the data dir.

`open_snowflake` and `open_segments` have the shapes of the cluster-mode openers
in `nebula_id.etcd.worker` and `nebula_id.storage.postgres_source` (less the etcd
client and pool watch those are given), so the app factory treats both modes alike.
The data dir is locked for the process's lifetime (`lock`), the Snowflake high-water
mark lives in a file (`mark`), and segment counters live in SQLite (`storage.sqlite`).
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Iterator

from prometheus_client import CollectorRegistry

from nebula_id import errors
from nebula_id.clock import Clock
from nebula_id.core import pool as pools
from nebula_id.core import segment
from nebula_id.core.jsontypes import JsonObject
from nebula_id.core.snowflake import SnowflakeGenerator
from nebula_id.standalone import lock as locks
from nebula_id.standalone import mark as marks
from nebula_id.standalone.snowflake import StandaloneSnowflake
from nebula_id.storage import sqlite as sqlite_store


@contextlib.contextmanager
def locked_data_dir(data_dir: pathlib.Path) -> Iterator[locks.DataDirLock]:
    """Hold the data-dir lock while the context is open."""
    held = locks.acquire(data_dir)
    try:
        yield held
    finally:
        held.release()


@contextlib.asynccontextmanager
async def open_snowflake(
    data_dir: pathlib.Path,
    pool: pools.PoolConfig,
    *,
    datacenter: str | None,
    worker_id: int,
    clock: Clock,
    registry: CollectorRegistry | None = None,
    horizon_ms: int | None = None,
) -> AsyncIterator[StandaloneSnowflake]:
    """The Snowflake source of one standalone node; its high-water mark is in `data_dir`."""
    own = pool.datacenter(datacenter)
    try:
        pool.layout.check_epoch(clock.wall_ms())
    except errors.InvalidLayout as e:
        raise errors.ConfigError(f"snowflake_epoch: {e.message}") from e
    generator = SnowflakeGenerator(
        pool.layout,
        datacenter=own.id,
        worker=worker_id,
        clock=clock,
        tolerance_ms=pool.clock_backward_tolerance_ms,
        issue_after_ms=pool.snowflake_issue_after_ms,
    )
    source = StandaloneSnowflake(
        generator,
        marks.MarkFile(data_dir),
        clock=clock,
        registry=registry,
        tolerance_ms=pool.clock_backward_tolerance_ms,
        **({"horizon_ms": horizon_ms} if horizon_ms is not None else {}),
    )
    await source.start()
    try:
        yield source
    finally:
        await source.close()


class StandaloneSegments:
    """The allocator over SQLite, plus where the file is (for `/v1/info`)."""

    def __init__(
        self, allocator: segment.SegmentAllocator, store: sqlite_store.SqliteSegmentStore
    ) -> None:
        self._allocator = allocator
        self._store = store
        self.next_ids = allocator.next_ids
        self.take_one = allocator.take_one

    def tags(self) -> list[str]:
        return self._allocator.tags()

    def ready_reason(self) -> str | None:
        return self._allocator.ready_reason()

    def info(self) -> JsonObject:
        return {"store": str(self._store.path), "tags": self._allocator.info()}


@contextlib.asynccontextmanager
async def open_segments(
    data_dir: pathlib.Path,
    pool: pools.PoolConfig,
    *,
    datacenter: str | None,
    clock: Clock,
    registry: CollectorRegistry | None = None,
    prefetch_ratio: float = 0.1,
) -> AsyncIterator[StandaloneSegments]:
    """Segment IDs from the data dir's SQLite file."""
    own = pool.datacenter(datacenter)
    store = sqlite_store.SqliteSegmentStore(
        data_dir / sqlite_store.DB_FILE,
        datacenter=own.name,
        datacenter_id=own.id,
        datacenter_bits=pool.layout.datacenter_bits,
    )
    allocator = segment.SegmentAllocator(
        store,
        list(pool.tags),
        clock=clock,
        prefetch_ratio=prefetch_ratio,
    )
    try:
        await allocator.start()
        yield StandaloneSegments(allocator, store)
    finally:
        await allocator.close()
        store.close()
