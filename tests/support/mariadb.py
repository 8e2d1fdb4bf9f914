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

from tests.support import dbserver, processes

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


class MariaDBServer(dbserver.DatabaseServer):
    """One MariaDB server; `stop()` is a clean shutdown, `kill()` a crash (SIGKILL).

    Both keep the data dir and the port, so `start()` brings the same server back.
    """

    NAME = "MariaDB"
    START_TIMEOUT = 90.0
    STOP_SIGNAL = signal.SIGTERM
    STOP_TIMEOUT = 60.0
    QUOTE = "`"

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        template: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="nebula-maria-"))
        super().__init__(workdir, template=template, log_name="mariadb.log")
        self.socket_path = workdir / "mysqld.sock"
        self._extra_args = tuple(extra_args)

    def dsn(self, db: str = "nebula", *, scheme: str = "mysql") -> str:
        """``mysql://root@127.0.0.1:PORT/<db>``."""
        if not self.port:
            raise RuntimeError("MariaDB has not been started yet")
        return f"{scheme}://root@127.0.0.1:{self.port}/{db}"

    def _prepare_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

    def _make_data_dir(self) -> None:
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

    def _spawn(self) -> subprocess.Popen[bytes]:
        # A fresh log per start, so readiness is judged on this start's lines.
        with contextlib.suppress(FileNotFoundError):
            self.log_path.rename(self.log_path.with_suffix(".log.old"))
        return super()._spawn()

    def _ready(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.socket_path))
            except OSError:
                return False
        return "ready for connections" in self.log_path.read_text(errors="replace")

    def _run_sql(self, statement: str) -> str:
        return self.sql(statement)

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
