"""`nebula-id serve --unix-socket PATH`: the same API on a Unix socket beside TCP.

A real process, because the socket is made by the command (stale files
replaced, the mode opened, the file removed at exit), and the Python client
over ``unix://``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator

import pytest

from nebula_id.client import IdClient
from tests.support import http, processes

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")


@contextlib.contextmanager
def serving(tmp_path: pathlib.Path, socket_path: pathlib.Path, *flags: str) -> Iterator[str]:
    """A sidecar on a free TCP port and on `socket_path`; yields its TCP base URL."""
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "sidecar.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env["NEBULA_UNIX_SOCKET"] = str(socket_path)
    argv = [NEBULA_ID, "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    proc = processes.spawn([*argv, *flags], log_path=log, env=env)
    try:
        processes.wait_until(
            lambda: http.get(base + "/readyz", timeout=1.0)[0] == 200,
            what="the sidecar",
            proc=proc,
            log_path=log,
            timeout=15,
        )
        yield base
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    finally:
        processes.stop(proc, timeout=5)


@pytest.fixture
def short_dir() -> Iterator[pathlib.Path]:
    """A directory with a short path: sun_path holds 108 bytes, pytest's tmp_path may not fit."""
    with tempfile.TemporaryDirectory(prefix="nid-") as folder:
        yield pathlib.Path(folder)


async def test_the_client_gets_the_same_sidecars_ids_over_the_socket_and_tcp(
    tmp_path: pathlib.Path, short_dir: pathlib.Path
) -> None:
    path = short_dir / "ids.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a file left by a previous run: bound, nobody listening
    stale.close()
    with serving(tmp_path, path) as base:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        async with (
            IdClient(f"unix://{path}", algorithm="snowflake", batch_size=100) as over_socket,
            IdClient(base, algorithm="snowflake", batch_size=100) as over_tcp,
            IdClient(unix_socket=str(path), algorithm="segment", batch_size=10) as segments,
        ):
            assert over_socket.where == f"unix:{path}"
            seen = []
            for _ in range(3):
                seen += [await over_socket.next_id() for _ in range(150)]
                seen += await over_tcp.next_ids(150)
            assert len(set(seen)) == len(seen) == 900
            # One generator behind both doors: each client's IDs increase.
            assert all(a < b for a, b in itertools.pairwise(seen[:150]))
            first = await segments.next_ids(25)
            assert first == sorted(set(first))
            assert len(first) == 25
    assert not path.exists(), "the socket file is removed at exit"


async def test_a_socket_path_longer_than_sun_path_still_binds(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / ("d" * 60) / ("e" * 60)
    folder.mkdir(parents=True)
    path = folder / "nebula-id.sock"
    assert len(os.fsencode(path)) > 108
    with serving(tmp_path, path):
        assert stat.S_ISSOCK(path.stat().st_mode)
        # Connect the same way the server bound: through the directory's fd.
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(f"/proc/self/fd/{fd}/{path.name}")
                conn.sendall(
                    b"GET /v1/ids/snowflake HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                answer = b""
                while chunk := conn.recv(4096):
                    answer += chunk
        finally:
            os.close(fd)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b'{"id":"' in answer


def test_a_path_that_cannot_be_bound_fails_the_start_with_one_line(
    tmp_path: pathlib.Path,
) -> None:
    log = tmp_path / "bad.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    proc = processes.spawn(
        [
            NEBULA_ID,
            "serve",
            "--port",
            str(processes.free_port()),
            "--data-dir",
            str(tmp_path / "data"),
            "--unix-socket",
            str(tmp_path / "missing" / "x.sock"),
        ],
        log_path=log,
        env=env,
    )
    assert proc.wait(timeout=15) == 2
    text = log.read_text()
    assert "cannot listen on unix socket" in text
    assert "Traceback" not in text
