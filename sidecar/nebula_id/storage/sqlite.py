"""Segment counters in SQLite under the data dir (the standalone `SegmentStore`).

Same contract as the PostgreSQL store: one atomic update per range, counters
start at 1, and the final ID is ``datacenter_base + counter``.  The update is
committed with ``synchronous=FULL`` before the range is returned, so a range
survives a crash and a restart continues above everything handed out before.
sqlite3 blocks, so every call runs in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import threading

from nebula_id import errors
from nebula_id.core import segment

DB_FILE = "segments.sqlite3"
FIRST_COUNTER = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS nebula_segments (
    tag           TEXT    NOT NULL,
    datacenter_id INTEGER NOT NULL,
    max_id        INTEGER NOT NULL,
    step          INTEGER NOT NULL,
    updated_at    TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (tag, datacenter_id)
)
"""


class SqliteSegmentStore:
    """Ranges of one standalone datacenter, from ``<data dir>/segments.sqlite3``."""

    def __init__(
        self,
        path: pathlib.Path,
        *,
        datacenter: str,
        datacenter_id: int,
        datacenter_bits: int,
    ) -> None:
        self.path = path
        self._datacenter = datacenter
        self._datacenter_id = datacenter_id
        self._base = segment.datacenter_base(datacenter_id, datacenter_bits)
        self._limit = segment.counter_limit(datacenter_bits)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)
        except sqlite3.Error as e:
            raise errors.StorageError(f"cannot open segment store {path}: {e}") from e

    async def allocate(self, tag: str, step: int) -> segment.SegmentRange:
        return await asyncio.to_thread(self._allocate, tag, step)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _allocate(self, tag: str, step: int) -> segment.SegmentRange:
        if step < 1:
            raise errors.StorageError(f"segment step must be at least 1, got {step}")
        if step >= self._limit:
            raise errors.StorageError(f"step {step} does not fit the datacenter's ID slice")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(
                        "INSERT OR IGNORE INTO nebula_segments (tag, datacenter_id, max_id, step) "
                        "VALUES (?, ?, ?, ?)",
                        (tag, self._datacenter_id, FIRST_COUNTER, step),
                    )
                    row = self._db.execute(
                        "UPDATE nebula_segments SET max_id = max_id + ?1, step = ?1, "
                        "updated_at = CURRENT_TIMESTAMP "
                        "WHERE tag = ?2 AND datacenter_id = ?3 AND max_id <= ?4 "
                        "RETURNING max_id",
                        # limit - step in Python: with datacenterBits 0 the limit is
                        # 2**63, one more than SQLite's largest integer.
                        (step, tag, self._datacenter_id, self._limit - step),
                    ).fetchone()
                    if row is None:
                        raise errors.StorageError(
                            f"segment tag {tag!r} has run out of IDs in datacenter "
                            f"{self._datacenter!r} (limit {self._limit})"
                        )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise errors.StorageError(
                    f"segment allocation for tag {tag!r} in {self.path} failed: {e}"
                ) from e
        end = int(row[0])
        return segment.SegmentRange(
            start=self._base + end - step,
            end=self._base + end,
            datacenter=self._datacenter,
            step=step,
        )
