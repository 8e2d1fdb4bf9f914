"""A minimal HTTP/1.1 keep-alive GET for the clients' batch requests.

The clients ask one sidecar the same question over and over; a general HTTP
client spends about as much CPU per request as the application spends taking
the thousand IDs it brings.  This one writes a prepared request and reads a
``Content-Length`` (or chunked) answer on one kept-alive connection, over TCP,
TLS or a Unix socket; the asyncio client uses `AsyncConnection` and the
threaded one `SyncConnection`.  A request that fails on a reused connection
before any answer arrived (the sidecar closed it while idle) is sent once more
on a new one: a GET of IDs is safe to repeat, since unanswered IDs are only a
gap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import urllib.parse

MAX_HEAD = 64 * 1024


class WireError(OSError):
    """The answer is not HTTP/1.1 we can read, or the connection broke mid-answer."""


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Lowercase names."""
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Where to connect and what to send as ``Host``."""

    host: str
    port: int
    tls: bool
    unix_socket: str | None

    @classmethod
    def of(cls, base_url: str, unix_socket: str | None) -> Target:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"base_url must be http://, https:// or unix://, got {base_url!r}")
        tls = url.scheme == "https"
        return cls(
            host=url.hostname or "localhost",
            port=url.port or (443 if tls else 80),
            tls=tls,
            unix_socket=unix_socket,
        )

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default or self.unix_socket else f"{host}:{self.port}"


def request_bytes(target: Target, path_qs: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path_qs} HTTP/1.1", f"Host: {target.host_header}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """(status, lowercase headers) of a response head ending in CRLF CRLF."""
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise WireError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(code), headers


def _keeps_alive(headers: dict[str, str]) -> bool:
    return "close" not in headers.get("connection", "").lower()


def _content_length(headers: dict[str, str]) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise WireError(f"bad Content-Length {raw!r}")
    return int(raw)


def _tls_context(target: Target) -> ssl.SSLContext | None:
    return ssl.create_default_context() if target.tls else None


# --- asyncio -------------------------------------------------------------------------------


class AsyncConnection:
    """One kept-alive connection to the sidecar, for one task at a time."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, request: bytes, *, times: int = 1) -> list[Answer]:
        """Send `request` `times` times back to back (HTTP/1.1 pipelining), read the answers.

        The sidecar answers pipelined requests in order, so batches arrive in
        the order their IDs were issued.
        """
        reused = self._writer is not None
        try:
            return await self._exchange(request, times)
        except (OSError, asyncio.IncompleteReadError) as e:
            self.close()
            if not reused or not _nothing_read(e):
                raise _wire(e) from e
        try:
            return await self._exchange(request, times)
        except (OSError, asyncio.IncompleteReadError) as e:
            self.close()
            raise _wire(e) from e

    async def _exchange(self, request: bytes, times: int) -> list[Answer]:
        if self._writer is None:
            await self._connect()
        reader, writer = self._reader, self._writer
        assert reader is not None
        assert writer is not None
        writer.write(request * times)
        answers = []
        for _ in range(times):
            answer = await self._read_answer(reader)
            answers.append(answer)
            if not _keeps_alive(answer.headers):
                self.close()
                break
        return answers

    async def _read_answer(self, reader: asyncio.StreamReader) -> Answer:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as e:
            raise WireError("the answer's head is too long") from e
        status, headers = parse_head(head)
        length = _content_length(headers)
        if length is not None:
            body = await reader.readexactly(length)
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked(reader)
        else:
            body = await reader.read()
            headers["connection"] = "close"
        return Answer(status, headers, body)

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def _connect(self) -> None:
        target = self.target
        if target.unix_socket:
            self._reader, self._writer = await asyncio.open_unix_connection(
                target.unix_socket, limit=MAX_HEAD
            )
        else:
            self._reader, self._writer = await asyncio.open_connection(
                target.host, target.port, ssl=_tls_context(target), limit=MAX_HEAD
            )
            sock = self._writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()

    @property
    def is_open(self) -> bool:
        return self._writer is not None


def _nothing_read(e: BaseException) -> bool:
    """True when the failure came before any byte of the answer."""
    if isinstance(e, asyncio.IncompleteReadError):
        return not e.partial
    return isinstance(e, ConnectionError)


def _wire(e: BaseException) -> OSError:
    if isinstance(e, OSError):
        return e
    return WireError(f"the connection closed mid-answer: {e}")


# --- threads --------------------------------------------------------------------------------


class SyncConnection:
    """The blocking twin of `AsyncConnection`; the caller serialises its use."""

    def __init__(self, target: Target, *, timeout: float) -> None:
        self.target = target
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def get(self, request: bytes, *, times: int = 1) -> list[Answer]:
        """As `AsyncConnection.get`: `request` sent `times` times together, answers in order."""
        reused = self._sock is not None
        try:
            return self._exchange(request, times)
        except _Unanswered as e:
            self.close()
            if not reused:
                raise e.cause from None
        except OSError:
            self.close()
            raise
        try:
            return self._exchange(request, times)
        except _Unanswered as e:
            self.close()
            raise e.cause from None
        except OSError:
            self.close()
            raise

    def _exchange(self, request: bytes, times: int) -> list[Answer]:
        if self._sock is None:
            self._connect()
        sock = self._sock
        assert sock is not None
        try:
            sock.sendall(request * times)
            first = self._recv()
        except ConnectionError as e:
            raise _Unanswered(e) from e
        if not first:
            raise _Unanswered(WireError("the sidecar closed the connection"))
        self._buffer = first
        found = []
        for _ in range(times):
            answer = self._read_answer()
            found.append(answer)
            if not _keeps_alive(answer.headers):
                self.close()
                break
        return found

    def _read_answer(self) -> Answer:
        head = self._read_until(b"\r\n\r\n")
        status, headers = parse_head(head)
        length = _content_length(headers)
        if length is not None:
            body = self._read_exactly(length)
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while size := int(self._read_until(b"\r\n").split(b";")[0].strip(), 16):
                parts.append(self._read_exactly(size))
                self._read_exactly(2)
            self._read_until(b"\r\n")
            body = b"".join(parts)
        else:
            chunks = [self._buffer]
            while chunk := self._recv():
                chunks.append(chunk)
            body, self._buffer = b"".join(chunks), b""
            headers["connection"] = "close"
        return Answer(status, headers, body)

    def _recv(self) -> bytes:
        assert self._sock is not None
        return self._sock.recv(256 * 1024)

    def _read_until(self, marker: bytes) -> bytes:
        while (end := self._buffer.find(marker)) < 0:
            if len(self._buffer) > MAX_HEAD:
                raise WireError("the answer's head is too long")
            chunk = self._recv()
            if not chunk:
                raise WireError("the connection closed mid-answer")
            self._buffer += chunk
        end += len(marker)
        found, self._buffer = self._buffer[:end], self._buffer[end:]
        return found

    def _read_exactly(self, size: int) -> bytes:
        chunks = [self._buffer]
        have = len(self._buffer)
        while have < size:
            chunk = self._recv()
            if not chunk:
                raise WireError("the connection closed mid-answer")
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        self._buffer = data[size:]
        return data[:size]

    def _connect(self) -> None:
        target = self.target
        sock: socket.socket
        if target.unix_socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(target.unix_socket)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection((target.host, target.port), timeout=self._timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            context = _tls_context(target)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=target.host)
        self._sock = sock
        self._buffer = b""

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buffer = b""
        if sock is not None:
            sock.close()

    @property
    def is_open(self) -> bool:
        return self._sock is not None


class _Unanswered(Exception):
    """The request got no byte of an answer: safe to send again on a new connection."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause
