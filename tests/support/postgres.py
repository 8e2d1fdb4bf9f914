"""A throwaway PostgreSQL cluster made with ``initdb``, on a free loopback port.

We run as root here, and PostgreSQL refuses to: when root, every server process
runs as the ``postgres`` OS user and the cluster dir is chowned to it.  The
cluster dir must therefore live under a path that user can traverse (by
default a fresh ``/tmp/nebula-pg-*``), not under pytest's root-only tmp dirs.

Making a cluster from a template (a stopped cluster's data dir) takes a copy
instead of an ``initdb``; the fixtures use one template per session.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import binaries, processes

_START_TIMEOUT = 60.0
_PORT_ATTEMPTS = 3
_OS_USER = "postgres"


def _run_as() -> str | None:
    return _OS_USER if os.geteuid() == 0 else None


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(_OS_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


class PostgresCluster:
    """One PostgreSQL server (``postgres`` as superuser, trust auth on loopback).

    The database ``nebula`` exists after the first start.  `stop()` is a fast
    shutdown, `kill()` a crash; both keep data and port for `start()`.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        template: Path | None = None,
        pg_bin: Path | None = None,
    ) -> None:
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="nebula-pg-"))
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.socket_dir = workdir / "sock"
        self.log_path = workdir / "postgres.log"
        self.port = 0
        self._template = template
        self._pg_bin = pg_bin or binaries.postgres_bin_dir()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses -------------------------------------------------------------

    def dsn(self, db: str = "nebula") -> str:
        """``postgresql://postgres@127.0.0.1:PORT/<db>``."""
        if not self.port:
            raise RuntimeError("PostgreSQL has not been started yet")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------

    def _init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o700)
        _chown_to_postgres(self.workdir)
        self.socket_dir.mkdir(exist_ok=True)
        _chown_to_postgres(self.socket_dir)
        if self._template is not None:
            subprocess.run(["cp", "-a", str(self._template), str(self.data_dir)], check=True)
            return
        proc = subprocess.run(
            [
                str(self._pg_bin / "initdb"),
                f"--pgdata={self.data_dir}",
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user=_run_as(),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise processes.ServiceStartError(f"initdb failed:\n{proc.stdout}\n{proc.stderr}")

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
        }
        argv = [str(self._pg_bin / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _ready(self) -> bool:
        # postmaster.pid: line 1 is the PID (a killed server leaves a stale file),
        # and since PostgreSQL 10 line 8 is the server state.
        assert self._proc is not None
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return False
        return (
            len(lines) >= 8
            and lines[0].strip() == str(self._proc.pid)
            and lines[7].strip() == "ready"
        )

    def start(self) -> PostgresCluster:
        """Create the cluster on first use, start it, wait until it accepts connections."""
        if self.running:
            return self
        fresh = not self.data_dir.exists()
        if fresh:
            self._init()
        first = self.port == 0
        for attempt in range(_PORT_ATTEMPTS):
            if first:
                self.port = processes.free_port()
            self._proc = processes.spawn(self._argv(), log_path=self.log_path, user=_run_as())
            try:
                processes.wait_until(
                    self._ready,
                    what=f"PostgreSQL on port {self.port}",
                    proc=self._proc,
                    log_path=self.log_path,
                    timeout=_START_TIMEOUT,
                )
                break
            except processes.ServiceStartError as e:
                processes.kill(self._proc)
                self._proc = None
                if not (first and "already in use" in str(e) and attempt + 1 < _PORT_ATTEMPTS):
                    raise
        if fresh and self._template is None:
            self.create_database("nebula")
        return self

    def psql(self, sql: str, *, db: str = "postgres") -> str:
        """Run one SQL string with psql and return its unaligned output."""
        proc = subprocess.run(
            [
                str(self._pg_bin / "psql"),
                self.dsn(db),
                "--no-psqlrc",
                "--tuples-only",
                "--no-align",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed on {sql!r}: {proc.stderr.strip()}")
        return proc.stdout

    def create_database(self, name: str) -> str:
        """Create database `name` and return its DSN."""
        quoted = '"' + name.replace('"', '""') + '"'
        self.psql(f"CREATE DATABASE {quoted}")
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (what ``pg_ctl stop -m fast`` sends: SIGINT), then wait."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        processes.kill(proc)
        self._wait_pidfile_gone()

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, as a crash would."""
        proc, self._proc = self._proc, None
        if proc is not None:
            processes.kill(proc)

    def _wait_pidfile_gone(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (self.data_dir / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        """Stop and delete the cluster."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
