"""The standalone Snowflake high-water mark, kept in a file with fsync.

The mark is a Unix-millisecond timestamp that no issued ID exceeds.  It is
written (temp file, fsync, rename, fsync of the folder) *before* the generator
may use it, so after any crash or clock rollback the next process can wait
until its clock has passed it and never repeat an ID.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
from collections.abc import Mapping

from nebula_id import errors

MARK_FILE = "snowflake-mark.json"


def mark_of(record: Mapping[str, object]) -> int:
    """The mark of a record `MarkFile.read_all` returned (which checked it)."""
    value = record["markMs"]
    assert isinstance(value, int)
    return value


class MarkFile:
    """Read and durably write the mark of one data dir."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.path = data_dir / MARK_FILE
        # One writer at a time: every write goes through the same temp file.
        self._write_lock = threading.Lock()

    def read(self) -> int | None:
        """The stored mark, None when there is none; a damaged file refuses to start."""
        stored = self.read_all()
        return None if stored is None else mark_of(stored)

    def read_all(self) -> dict[str, object] | None:
        """The whole record (the mark and what was written with it), validated."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise errors.StorageError(f"cannot read {self.path}: {e.strerror}") from e
        try:
            record: object = json.loads(text)
            if not isinstance(record, dict):
                raise TypeError("not a JSON object")
            value = record["markMs"]
        except (ValueError, KeyError, TypeError) as e:
            raise errors.ConfigError(
                f"{self.path} is damaged, so it is unknown which Snowflake timestamps were "
                "used; if no ID of this data dir can be newer than now, delete the file"
            ) from e
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise errors.ConfigError(f"{self.path} holds an invalid mark {value!r}")
        return dict(record)

    def write(self, mark_ms: int, **details: object) -> None:
        """Persist `mark_ms` durably; returns only once it is on disk."""
        with self._write_lock:
            self._write(mark_ms, details)

    def _write(self, mark_ms: int, details: dict[str, object]) -> None:
        temp = self.path.with_suffix(".tmp")
        payload = json.dumps({"markMs": mark_ms, **details}).encode()
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise errors.StorageError(f"cannot persist {self.path}: {e.strerror}") from e
