"""A TCP proxy a test can cut: a partition between one process and a server.

`TcpProxy` listens on a free loopback port and forwards every connection to
`target`.  `cut()` closes every open connection (both ends see a reset) and
refuses new ones until `heal()`: to the client it looks like a network
partition.  It runs its own event loop in a daemon thread, so blocking tests
and asyncio tests can use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class TcpProxy:
    """Forward 127.0.0.1:`port` to `target`; `cut()` and `heal()` the link."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut = False
        self.port = 0
        self.connections = 0
        """Connections accepted while healed (for tests of the proxy itself)."""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def cut(self) -> None:
        """Drop every connection and refuse new ones (a partition)."""
        asyncio.run_coroutine_threadsafe(self._set_cut(True), self._loop).result(timeout=10)

    def heal(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_cut(False), self._loop).result(timeout=10)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        sock: socket.socket = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    async def _set_cut(self, cut: bool) -> None:
        self._cut = cut
        if cut:
            for writer in list(self._writers):
                _abort(writer)
            self._writers.clear()

    async def _close(self) -> None:
        await self._set_cut(True)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _abort(writer)
            return
        if self._cut:  # cut while we were connecting
            _abort(writer)
            _abort(up_writer)
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            self._writers.discard(writer)
            self._writers.discard(up_writer)
            writer.close()
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        if not writer.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
