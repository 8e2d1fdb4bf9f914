"""The event loop choice and the Unix socket listener of `nebula-id serve`."""

from __future__ import annotations

import asyncio
import pathlib
import socket
import stat
import sys
import tempfile

import pytest

from nebula_id import errors
from nebula_id.http import listen


def test_uvloop_when_importable_else_asyncios_own(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = listen.new_event_loop()
    try:
        assert listen.loop_name(loop) == "uvloop"  # the dev extras include nebula-id[fast]
    finally:
        loop.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an install without [fast] sees
    loop = listen.new_event_loop()
    try:
        assert listen.loop_name(loop) == "asyncio"
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_a_stale_socket_is_replaced_and_the_mode_opened() -> None:
    with tempfile.TemporaryDirectory(prefix="nid-") as folder:
        path = pathlib.Path(folder) / "s.sock"
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(path))
        stale.close()
        sock = listen.unix_listener(str(path))
        try:
            assert stat.S_IMODE(path.stat().st_mode) == listen.SOCKET_MODE
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(path))  # listening, not the stale one
        finally:
            sock.close()
            listen.remove_socket(str(path))
        assert not path.exists()


def test_a_regular_file_is_never_removed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("not a socket")
    with pytest.raises(errors.ConfigError, match="cannot listen on unix socket"):
        listen.unix_listener(str(path))
    listen.remove_socket(str(path))
    assert path.read_text() == "not a socket"
