"""Where the sidecar listens besides TCP, and which event loop it runs on.

A Unix domain socket skips TCP's loopback stack: in a pod it lives in an
``emptyDir`` shared with the application containers.  The socket is made
here, before the app starts, so that a stale file left by a previous run of
the container is replaced and the mode lets any user of the pod connect (the
directory, not the socket, is what keeps other pods out).

uvloop is used when it is importable (``pip install 'nebula-id[fast]'``); the
standard loop otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import socket
import stat

from nebula_id import errors

SOCKET_MODE = 0o666
BACKLOG = 1024
SUN_PATH_MAX = 108


def unix_listener(path: str) -> socket.socket:
    """A listening Unix socket at `path`, replacing a stale socket file there."""
    where = pathlib.Path(path)
    try:
        if stat.S_ISSOCK(where.lstat().st_mode):
            where.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise errors.ConfigError(f"unix_socket {path}: {e.strerror or e}") from e
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _bind(sock, where)
        os.chmod(path, SOCKET_MODE)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise errors.ConfigError(f"cannot listen on unix socket {path}: {e.strerror or e}") from e
    sock.setblocking(False)
    return sock


def _bind(sock: socket.socket, where: pathlib.Path) -> None:
    """Bind, also to a path longer than sun_path's 108 bytes (through its directory's fd)."""
    if len(os.fsencode(where)) < SUN_PATH_MAX or not pathlib.Path("/proc/self/fd").is_dir():
        sock.bind(str(where))
        return
    folder = os.open(where.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.bind(f"/proc/self/fd/{folder}/{where.name}")
    finally:
        os.close(folder)


def remove_socket(path: str) -> None:
    """Remove the socket file at exit, so a client fails fast instead of hanging on it."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(pathlib.Path(path).lstat().st_mode):
            os.unlink(path)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``, for the start-up log line and /v1/info."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
