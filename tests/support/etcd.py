"""A real single-member etcd on free loopback ports, data in a private dir."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.support import http, processes

_START_TIMEOUT = 30.0
_PORT_ATTEMPTS = 3


class EtcdServer:
    """One etcd process.  `restart()` keeps the ports and the data.

    The ports are chosen on the first start (another run on the machine may grab
    a port between probing and binding, so a clash is retried with new ports).
    """

    def __init__(self, bin_dir: Path, workdir: Path, *, name: str = "nebula-test") -> None:
        self.binary = bin_dir / "etcd"
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "etcd.log"
        self.name = name
        self.client_port = 0
        self.peer_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The client URL, e.g. ``http://127.0.0.1:2379``."""
        if not self.client_port:
            raise RuntimeError("etcd has not been started yet")
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _argv(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            str(self.binary),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _healthy(self) -> bool:
        status, body = http.get(f"{self.endpoint}/health", timeout=1.0)
        if status != 200:
            return False
        return bool(json.loads(body).get("health") == "true")

    def start(self) -> EtcdServer:
        """Start (or restart after `stop`/`kill`) and wait until ``/health`` is true."""
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        first = self.client_port == 0
        for attempt in range(_PORT_ATTEMPTS):
            if first:
                self.client_port, self.peer_port = processes.free_port(), processes.free_port()
            self._proc = processes.spawn(self._argv(), log_path=self.log_path)
            try:
                processes.wait_until(
                    self._healthy,
                    what=f"etcd on {self.endpoint}",
                    proc=self._proc,
                    log_path=self.log_path,
                    timeout=_START_TIMEOUT,
                )
                return self
            except processes.ServiceStartError as e:
                processes.kill(self._proc)
                self._proc = None
                clash = "address already in use" in str(e)
                if not (first and clash and attempt + 1 < _PORT_ATTEMPTS):
                    raise
                shutil.rmtree(self.data_dir, ignore_errors=True)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Graceful stop (SIGTERM, wait); data and ports are kept for `start`."""
        if self._proc is not None:
            processes.stop(self._proc)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would; data and ports are kept for `start`."""
        if self._proc is not None:
            processes.kill(self._proc)
            self._proc = None

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the running etcd (SIGSTOP/SIGCONT: a pause, as a stalled host shows it)."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, sig)

    def restart(self) -> EtcdServer:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and delete the data."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
