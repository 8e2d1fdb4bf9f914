"""The standalone `SnowflakeSource`: one node, its high-water mark in the data dir.

The generator may only use timestamps up to a mark that is already on disk.
The mark is kept `horizon_ms` ahead of the clock by a background task that
writes it from a worker thread, so a request never waits for fsync.  If the
disk stops accepting writes, the clock soon passes the last mark and the
generator answers 503 `not_ready` instead of issuing an unrecorded ID.

On start, a previous run's mark is waited past (nothing is issued until the
clock reads later), which makes any restart safe, whatever the clock did.  A
graceful stop writes the last timestamp actually used, so the next start does
not wait out the whole horizon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from nebula_id import errors
from nebula_id.clock import Clock
from nebula_id.core import layout as layouts
from nebula_id.core.jsontypes import JsonObject
from nebula_id.core.snowflake import SnowflakeGenerator
from nebula_id.standalone import mark as marks

log = logging.getLogger(__name__)

DEFAULT_HORIZON_MS = 2000
DEFAULT_REFRESH_S = 0.2


class StandaloneSnowflake:
    """Serves from a `SnowflakeGenerator`; the mark refresher runs between `start` and `close`."""

    # The generator's bound methods, installed as attributes so serving an ID
    # costs no extra Python call.
    next_id: Callable[[], int]
    next_ids: Callable[[int], list[int]]

    def __init__(
        self,
        generator: SnowflakeGenerator,
        mark_file: marks.MarkFile,
        *,
        clock: Clock,
        registry: CollectorRegistry | None = None,
        tolerance_ms: int = 5,
        horizon_ms: int = DEFAULT_HORIZON_MS,
        refresh_interval: float = DEFAULT_REFRESH_S,
    ) -> None:
        self._generator = generator
        self._mark_file = mark_file
        self._clock = clock
        self._tolerance_ms = tolerance_ms
        self._horizon_ms = horizon_ms
        self._refresh_interval = refresh_interval
        self._mark_ms = -1
        self._previous_mark: int | None = None
        self._refresher: asyncio.Task[None] | None = None
        # The mark write running in a worker thread, if any: cancelling the task that
        # awaits it does not stop the thread, so `close` waits for it explicitly.
        self._in_flight: asyncio.Future[None] | None = None
        self._last_write_error: str | None = None
        self.next_id = generator.next_id
        self.next_ids = generator.next_ids
        self._mark_gauge = Gauge(
            "nebula_id_snowflake_high_water_mark_seconds",
            "The persisted high-water mark (Unix time): no ID carries a later timestamp",
            registry=registry,
        )
        self._write_failures = Counter(
            "nebula_id_snowflake_mark_write_failures",
            "High-water mark writes that failed",
            registry=registry,
        )

    @property
    def layout(self) -> layouts.SnowflakeLayout:
        return self._generator.layout

    @property
    def generator(self) -> SnowflakeGenerator:
        return self._generator

    async def start(self) -> None:
        """Wait past the stored mark, persist a new one, start the refresher."""
        stored = self._mark_file.read_all()
        previous = None if stored is None else marks.mark_of(stored)
        self._check_layout(stored)
        self._previous_mark = previous
        if previous is not None:
            self._generator.wait_past(previous)
            ahead = previous - self._clock.wall_ms()
            if ahead >= 0:
                log.info(
                    "Snowflake waits %d ms for the clock to pass the stored high-water mark %d "
                    "(an earlier run used timestamps up to it); UUIDs and segments serve now",
                    ahead + 1,
                    previous,
                )
        first = max(self._clock.wall_ms(), previous or 0) + self._horizon_ms
        await self._persist(first)
        self._refresher = asyncio.create_task(self._refresh_forever(), name="snowflake-mark")

    async def close(self) -> None:
        """Stop serving, stop the refresher, and persist the last timestamp used."""
        self.next_id = self._closed_one
        self.next_ids = self._closed_many
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._in_flight is not None:
            # A write the refresher started runs on in its thread: let it finish first,
            # so the final write below is the last one and the data-dir lock (released
            # after this returns) outlives every write.
            await asyncio.wait([self._in_flight])
            with contextlib.suppress(Exception):
                self._in_flight.result()  # its failure was the refresher's to report
        last = self._generator.last_timestamp_ms
        if last and self._mark_ms >= 0:
            # Every issued ID is at or below `last`, so it is a valid, lower mark.
            try:
                await self._write(last)
            except errors.StorageError as e:
                log.warning("could not persist the last timestamp at shutdown: %s", e.message)

    def ready_reason(self) -> str | None:
        now = self._clock.wall_ms()
        if self._previous_mark is not None and now <= self._previous_mark:
            return "not_ready"
        if now > self._mark_ms:
            return "not_ready"
        last = self._generator.last_timestamp_ms
        if last and now < last - self._tolerance_ms:
            return "clock_moved_backward"
        return None

    def info(self) -> JsonObject:
        return {
            "mode": "standalone",
            **self._generator.info(),
            "previous_mark_ms": self._previous_mark,
            "mark_file": str(self._mark_file.path),
            "mark_write_error": self._last_write_error,
            "lease": None,
        }

    # --- internals -------------------------------------------------------------------

    def _details(self) -> dict[str, object]:
        return {
            "datacenter": self._generator.datacenter,
            "worker": self._generator.worker,
            "layout": self._generator.layout.to_json(),
        }

    def _check_layout(self, stored: Mapping[str, object] | None) -> None:
        """Refuse a data dir whose IDs were made with another layout or epoch.

        The same timestamp maps to a different ID under another epoch, so a new
        layout could re-issue values the old one issued; and the datacenter bits
        place the segment counters.
        """
        if stored is None or "layout" not in stored:
            return
        current = self._generator.layout.to_json()
        if stored["layout"] != current:
            raise errors.ConfigError(
                f"the data dir was used with Snowflake layout {stored['layout']}, now "
                f"{current}; changing the layout or epoch could repeat IDs, so use a new "
                "--data-dir for the new layout"
            )

    async def _persist(self, mark_ms: int) -> None:
        """Write the mark to disk, then let the generator use it (never the other way).

        The stored mark never goes down while serving: after a clock rollback
        `now + horizon` can be below timestamps already issued.
        """
        mark_ms = max(mark_ms, self._mark_ms)
        await self._write(mark_ms)
        self._generator.allow_until(mark_ms)
        self._mark_ms = max(self._mark_ms, mark_ms)
        self._mark_gauge.set(self._mark_ms / 1000)

    async def _write(self, mark_ms: int) -> None:
        """One mark write in a worker thread, remembered until it has finished."""
        write = asyncio.ensure_future(
            asyncio.to_thread(self._mark_file.write, mark_ms, **self._details())
        )
        self._in_flight = write
        await asyncio.shield(write)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            if self._mark_ms - self._clock.wall_ms() > self._horizon_ms // 2:
                continue
            try:
                await self._persist(self._clock.wall_ms() + self._horizon_ms)
                self._last_write_error = None
            except errors.StorageError as e:
                self._write_failures.inc()
                if self._last_write_error != e.message:
                    log.error("high-water mark not persisted: %s", e.message)
                self._last_write_error = e.message

    @staticmethod
    def _closed_one() -> int:
        raise errors.NotReady("the sidecar is shutting down")

    @staticmethod
    def _closed_many(count: int) -> list[int]:
        raise errors.NotReady("the sidecar is shutting down")
