"""What the throwaway database servers of the tests share: one temp dir, one free port.

`PostgresCluster` and `MariaDBServer` differ in how a data dir is made, how the
server is started and asked whether it is ready, and which client runs SQL.  The
life around that is the same: a data dir made on first start (or copied from a
template, a stopped server's data dir), a free loopback port chosen once and kept
across restarts (a clash on the first start is retried with a new port), a clean
stop or a crash (SIGKILL) that both keep data and port, and a `close` that deletes
everything.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Self

from tests.support import processes

PORT_ATTEMPTS = 3


class DatabaseServer(abc.ABC):
    """One server process in `workdir`; subclasses say how to make, run and query it."""

    NAME: str
    """The server's name in messages ("PostgreSQL", "MariaDB")."""
    START_TIMEOUT: float
    STOP_SIGNAL: signal.Signals
    STOP_TIMEOUT: float
    QUOTE: str
    """The identifier quote of the engine's SQL."""

    def __init__(self, workdir: Path, *, template: Path | None, log_name: str) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / log_name
        self.port = 0
        self._template = template
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- what each server supplies -------------------------------------------------------

    @abc.abstractmethod
    def dsn(self, db: str = "nebula") -> str: ...

    @abc.abstractmethod
    def _prepare_workdir(self) -> None:
        """Make the work dir (and whatever the server needs in it) before the data dir."""

    @abc.abstractmethod
    def _make_data_dir(self) -> None:
        """Create a fresh data dir (no template)."""

    @abc.abstractmethod
    def _argv(self) -> list[str]: ...

    @abc.abstractmethod
    def _ready(self) -> bool: ...

    @abc.abstractmethod
    def _run_sql(self, statement: str) -> str:
        """Run one statement as the superuser on the server's default database."""

    def _spawn(self) -> subprocess.Popen[bytes]:
        return processes.spawn(self._argv(), log_path=self.log_path)

    def _after_stop(self) -> None:
        """Wait for what the server leaves behind after it exited (nothing, by default)."""
        return None

    # -- the life of the server ----------------------------------------------------------

    def start(self) -> Self:
        """Create the server on first use, start it, wait until it accepts connections."""
        if self.running:
            return self
        fresh = not self.data_dir.exists()
        if fresh:
            self._prepare_workdir()
            if self._template is not None:
                subprocess.run(["cp", "-a", str(self._template), str(self.data_dir)], check=True)
            else:
                self._make_data_dir()
        first = self.port == 0
        for attempt in range(PORT_ATTEMPTS):
            if first:
                self.port = processes.free_port()
            self._proc = self._spawn()
            try:
                processes.wait_until(
                    self._ready,
                    what=f"{self.NAME} on port {self.port}",
                    proc=self._proc,
                    log_path=self.log_path,
                    timeout=self.START_TIMEOUT,
                )
                break
            except processes.ServiceStartError as e:
                processes.kill(self._proc)
                self._proc = None
                if not (first and "in use" in str(e) and attempt + 1 < PORT_ATTEMPTS):
                    raise
        if fresh and self._template is None:
            self.create_database("nebula")
        return self

    def create_database(self, name: str) -> str:
        """Create database `name` and return its DSN."""
        quoted = self.QUOTE + name.replace(self.QUOTE, self.QUOTE * 2) + self.QUOTE
        self._run_sql(f"CREATE DATABASE {quoted}")
        return self.dsn(name)

    def stop(self) -> None:
        """Clean shutdown (the server's own signal for it), then wait."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, self.STOP_SIGNAL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.STOP_TIMEOUT)
        processes.kill(proc)
        self._after_stop()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        proc, self._proc = self._proc, None
        if proc is not None:
            processes.kill(proc)

    def close(self) -> None:
        """Stop and delete the server."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
