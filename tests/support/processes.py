"""Child processes for the test services: started in their own process group and
never left behind.

Every server the fixtures start (etcd, PostgreSQL, kube-apiserver) goes through
`spawn`.  The child gets its own session, so one `killpg` reaches whatever it
forked (PostgreSQL backends), and the kernel kills it if the test process dies
without running finalizers (``PR_SET_PDEATHSIG``).  An ``atexit`` hook kills any
group still registered, which covers Ctrl-C and failures between setup and
teardown.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support import waiting

_PR_SET_PDEATHSIG = 1
_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_LIVE_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session, output appended to `log_path`, and track it.

    The child dies with its parent only when spawned from the main thread: the
    kernel ties ``PR_SET_PDEATHSIG`` to the thread that forked.
    """
    on_main_thread = threading.current_thread() is threading.main_thread()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            user=user,
            start_new_session=True,
            preexec_fn=_die_with_parent if on_main_thread else None,
        )
    with _LIVE_LOCK:
        _LIVE[proc.pid] = proc
    return proc


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    kill(proc)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group (also stray children of an exited leader).

    Returns once the group is gone: a killed server's children (PostgreSQL's
    backends) hold its shared memory until they exit, and a restart before that
    fails with "pre-existing shared memory block is still in use".
    """
    _signal_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10.0
    while _group_alive(proc) and time.monotonic() < deadline:
        _signal_group(proc, signal.SIGKILL)
        time.sleep(0.01)
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)


def kill_all() -> None:
    """Kill every group still registered; runs at interpreter exit."""
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        kill(proc)


atexit.register(kill_all)


def log_tail(path: Path, *, lines: int = 40) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class ServiceStartError(RuntimeError):
    """A test dependency did not come up; the message carries its log tail."""


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
    interval: float = 0.05,
) -> None:
    """Poll `ready` until true; fail loudly with the log tail on exit or timeout."""

    def up() -> bool:
        code = proc.poll()
        if code is not None:
            raise ServiceStartError(
                f"{what} exited with code {code} during start-up; log {log_path}:\n"
                + log_tail(log_path)
            )
        return ready()

    try:
        waiting.eventually(up, timeout, what=what, interval=interval)
    except AssertionError as e:
        raise ServiceStartError(f"{e}; log {log_path}:\n" + log_tail(log_path)) from None
