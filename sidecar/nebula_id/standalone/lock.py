"""One process per data dir.

Two standalone sidecars on one data dir would both think they own worker 0
and the same segment counters, so the second one must refuse to start.  An
exclusive `flock` on ``<data dir>/lock`` proves ownership; the kernel drops it
when the process dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import pathlib

from nebula_id import errors

LOCK_FILE = "lock"


class DataDirLock:
    """Holds the lock until `release()` (or process exit)."""

    def __init__(self, data_dir: pathlib.Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def acquire(data_dir: pathlib.Path) -> DataDirLock:
    """Create the data dir if needed and lock it, or raise `errors.DataDirLocked`."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise errors.ConfigError(f"data dir {data_dir} cannot be used: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise errors.DataDirLocked(
            f"data dir {data_dir.resolve()} is in use by another nebula-id process "
            f"(pid {holder}); two processes cannot share one data dir: stop it, or give "
            "this one its own --data-dir"
        ) from e
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DataDirLock(data_dir, fd)
