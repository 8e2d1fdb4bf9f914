"""Standalone mode on a real data dir: a clean shutdown, and segments with datacenterBits 0.

A shutdown must not leave a mark write running after it returns (it would race the
final write on the one temp file, and outlive the data-dir lock); the final mark is
the last timestamp really issued.  A pool whose layout gives segments the whole
63-bit space (datacenterBits 0) must allocate, although 2**63 does not fit SQLite.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import prometheus_client

from nebula_id import clock as clocks
from nebula_id.core import layout as layouts
from nebula_id.core import segment
from nebula_id.core.snowflake import SnowflakeGenerator
from nebula_id.standalone import mark as marks
from nebula_id.standalone.snowflake import StandaloneSnowflake
from nebula_id.storage import sqlite as sqlite_store
from tests.support.waiting import eventually_async


class SlowMarkFile(marks.MarkFile):
    """A mark file on a slow disk; records when each write starts and ends."""

    def __init__(self, data_dir: Path, delay_s: float) -> None:
        super().__init__(data_dir)
        self.delay_s = delay_s
        self.writes: list[tuple[float, float, int]] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self._count = threading.Lock()

    def write(self, mark_ms: int, **details: object) -> None:
        with self._count:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        started = time.monotonic()
        try:
            time.sleep(self.delay_s)
            super().write(mark_ms, **details)
        finally:
            with self._count:
                self.concurrent -= 1
            self.writes.append((started, time.monotonic(), mark_ms))


async def test_shutdown_waits_for_a_mark_write_in_flight_and_writes_last(tmp_path: Path) -> None:
    clock = clocks.SystemClock()
    generator = SnowflakeGenerator(layouts.SnowflakeLayout(), datacenter=0, worker=0, clock=clock)
    mark_file = SlowMarkFile(tmp_path, delay_s=0.0)
    source = StandaloneSnowflake(
        generator,
        mark_file,
        clock=clock,
        registry=prometheus_client.CollectorRegistry(),
        horizon_ms=400,
        refresh_interval=0.01,
    )
    await source.start()
    ids = source.next_ids(100)
    assert len(set(ids)) == 100
    mark_file.delay_s = 0.3
    # Wait until the refresher is inside a (slow) write, then shut down.
    await eventually_async(
        lambda: mark_file.concurrent > 0, 10, what="the refresher inside a write", interval=0.005
    )
    await source.close()
    closed_at = time.monotonic()
    last = generator.last_timestamp_ms
    # A write still running would finish within its delay (0.3 s): watch for longer.
    await asyncio.sleep(0.5)
    assert mark_file.max_concurrent == 1, "two mark writes ran at once on one temp file"
    late = [w for w in mark_file.writes if w[1] > closed_at]
    assert late == [], "a mark write finished after shutdown returned"
    assert mark_file.writes[-1][2] == last
    assert marks.MarkFile(tmp_path).read() == last


async def test_standalone_segments_with_datacenter_bits_zero(tmp_path: Path) -> None:
    store = sqlite_store.SqliteSegmentStore(
        tmp_path / sqlite_store.DB_FILE, datacenter="default", datacenter_id=0, datacenter_bits=0
    )
    try:
        first = await store.allocate("orders", 1000)
        second = await store.allocate("orders", 1000)
        assert (first.start, first.end) == (1, 1001)
        assert (second.start, second.end) == (1001, 2001)
        allocator = segment.SegmentAllocator(
            store, [segment.Tag("users", 10, 100)], clock=clocks.SystemClock()
        )
        await allocator.start()
        try:
            got = await allocator.next_ids("users", 25)
            assert got == list(range(1, 26))
        finally:
            await allocator.close()
    finally:
        store.close()
