"""A throwaway PostgreSQL cluster made with ``initdb``, on a free loopback port.

We run as root here, and PostgreSQL refuses to: when root, every server process
runs as the ``postgres`` OS user and the cluster dir is chowned to it.  The
cluster dir must therefore live under a path that user can traverse (by
default a fresh ``/tmp/nebula-pg-*``), not under pytest's root-only tmp dirs.

Making a cluster from a template (a stopped cluster's data dir) takes a copy
instead of an ``initdb``; the fixtures use one template per session.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import binaries, dbserver, processes

_OS_USER = "postgres"


def _run_as() -> str | None:
    return _OS_USER if os.geteuid() == 0 else None


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(_OS_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


class PostgresCluster(dbserver.DatabaseServer):
    """One PostgreSQL server (``postgres`` as superuser, trust auth on loopback).

    The database ``nebula`` exists after the first start.  `stop()` is a fast
    shutdown, `kill()` a crash; both keep data and port for `start()`.
    """

    NAME = "PostgreSQL"
    START_TIMEOUT = 60.0
    # A fast shutdown: what ``pg_ctl stop -m fast`` sends.
    STOP_SIGNAL = signal.SIGINT
    STOP_TIMEOUT = 30.0
    QUOTE = '"'

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        template: Path | None = None,
        pg_bin: Path | None = None,
    ) -> None:
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="nebula-pg-"))
        super().__init__(workdir, template=template, log_name="postgres.log")
        self.socket_dir = workdir / "sock"
        self._pg_bin = pg_bin or binaries.postgres_bin_dir()

    def dsn(self, db: str = "nebula") -> str:
        """``postgresql://postgres@127.0.0.1:PORT/<db>``."""
        if not self.port:
            raise RuntimeError("PostgreSQL has not been started yet")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def _prepare_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o700)
        _chown_to_postgres(self.workdir)
        self.socket_dir.mkdir(exist_ok=True)
        _chown_to_postgres(self.socket_dir)

    def _make_data_dir(self) -> None:
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

    def _spawn(self) -> subprocess.Popen[bytes]:
        return processes.spawn(self._argv(), log_path=self.log_path, user=_run_as())

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

    def _run_sql(self, statement: str) -> str:
        return self.psql(statement)

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

    def _after_stop(self) -> None:
        deadline = time.monotonic() + 10.0
        while (self.data_dir / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
