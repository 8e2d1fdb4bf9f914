"""A throwaway MariaDB server made with ``mariadb-install-db``, on a free loopback port.

Everything lives in one temp dir (data, socket, pid file, log), and the server
listens on 127.0.0.1 only.  We run as root here; ``mariadbd`` accepts that
only when told ``--user=root`` explicitly.  ``root`` has no password and the
database ``nebula`` exists after the first start.

Making a server from a template (a stopped server's data dir) takes a copy
instead of an install; the fixtures use one template per session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.support import processes

_START_TIMEOUT = 90.0
_PORT_ATTEMPTS = 3
_SERVER = "mariadbd"
_INSTALL_DB = "mariadb-install-db"
_CLIENT = "mariadb"


def _find(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise processes.ServiceStartError(
        f"{name} not found: install Debian's mariadb-server (scripts/test.sh does)"
    )


class MariaDBServer:
    """One MariaDB server; `stop()` is a clean shutdown, `kill()` a crash (SIGKILL).

    Both keep the data dir and the port, so `start()` brings the same server back.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        template: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="nebula-maria-"))
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.socket_path = workdir / "mysqld.sock"
        self.log_path = workdir / "mariadb.log"
        self.port = 0
        self._template = template
        self._extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses -------------------------------------------------------------

    def dsn(self, db: str = "nebula", *, scheme: str = "mysql") -> str:
        """``mysql://root@127.0.0.1:PORT/<db>``."""
        if not self.port:
            raise RuntimeError("MariaDB has not been started yet")
        return f"{scheme}://root@127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------

    def _init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._template is not None:
            subprocess.run(["cp", "-a", str(self._template), str(self.data_dir)], check=True)
            return
        proc = subprocess.run(
            [
                _find(_INSTALL_DB),
                "--no-defaults",
                f"--datadir={self.data_dir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if proc.returncode != 0:
            raise processes.ServiceStartError(
                f"mariadb-install-db failed:\n{proc.stdout}\n{proc.stderr}"
            )

    def _argv(self) -> list[str]:
        return [
            _find(_SERVER),
            "--no-defaults",
            "--user=root",
            f"--datadir={self.data_dir}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.workdir / 'mariadbd.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            # Durable commits (the default, and what the store expects); the
            # crash tests depend on it.
            "--innodb-flush-log-at-trx-commit=1",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--max-connections=200",
            "--performance-schema=OFF",
            *self._extra_args,
        ]

    def _ready(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.socket_path))
            except OSError:
                return False
        return "ready for connections" in self.log_path.read_text(errors="replace")

    def start(self) -> MariaDBServer:
        """Create the server on first use, start it, wait until it accepts connections."""
        if self.running:
            return self
        fresh = not self.data_dir.exists()
        if fresh:
            self._init()
        first = self.port == 0
        for attempt in range(_PORT_ATTEMPTS):
            if first:
                self.port = processes.free_port()
            # A fresh log per start, so readiness is judged on this start's lines.
            with contextlib.suppress(FileNotFoundError):
                self.log_path.rename(self.log_path.with_suffix(".log.old"))
            self._proc = processes.spawn(self._argv(), log_path=self.log_path)
            try:
                processes.wait_until(
                    self._ready,
                    what=f"MariaDB on port {self.port}",
                    proc=self._proc,
                    log_path=self.log_path,
                    timeout=_START_TIMEOUT,
                )
                break
            except processes.ServiceStartError as e:
                processes.kill(self._proc)
                self._proc = None
                if not (first and "in use" in str(e) and attempt + 1 < _PORT_ATTEMPTS):
                    raise
        if fresh and self._template is None:
            self.sql("CREATE DATABASE IF NOT EXISTS nebula")
        return self

    def sql(self, statement: str, *, db: str | None = None) -> str:
        """Run SQL with the ``mariadb`` client over the socket; tab-separated output."""
        argv = [
            _find(_CLIENT),
            "--no-defaults",
            f"--socket={self.socket_path}",
            "--user=root",
            "--batch",
            "--skip-column-names",
            "-e",
            statement,
        ]
        if db is not None:
            argv.append(db)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"mariadb failed on {statement!r}: {proc.stderr.strip()}")
        return proc.stdout

    def create_database(self, name: str) -> str:
        """Create database `name` and return its DSN."""
        quoted = "`" + name.replace("`", "``") + "`"
        self.sql(f"CREATE DATABASE {quoted}")
        return self.dsn(name)

    def stop(self) -> None:
        """Clean shutdown (SIGTERM), then wait."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        processes.kill(proc)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        proc, self._proc = self._proc, None
        if proc is not None:
            processes.kill(proc)

    def close(self) -> None:
        """Stop and delete the server."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MariaDBServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
