"""`IdClient`: IDs from the sidecar at in-process speed, through a local prefetch buffer.

One HTTP request per ID costs about 50 us; one per thousand IDs costs almost
nothing per ID.  So the client asks for a batch (``?count=batch_size``), keeps
it in a deque, and fetches the next batch in a background task once the deque
falls below `low_water` of a batch, before the application runs dry (Tinyid's
client and Leaf's double buffer work the same way).  Above that low mark,
`next_id` is a pop that never suspends; once per batch it yields to the event
loop, so the next request goes out even from a loop that awaits nothing else.

At most one fetch is in flight and batches are appended in the order they were
asked for, so the client never returns an ID twice and keeps the sidecar's
order: Snowflake IDs from one sidecar stay increasing.  IDs still buffered when
the client closes are dropped; gaps are allowed, repeats are not.
"""

from __future__ import annotations

import asyncio
import collections
import types
import urllib.parse
from typing import Final

import aiohttp

from nebula_id import errors
from nebula_id.client import answers, wire

Id = int | str
"""An int for Snowflake and Segment, the canonical lowercase string for UUIDs."""

DEFAULT_BASE_URL: Final = "http://127.0.0.1:8080"
BINARY: Final = "application/octet-stream"
UNIX_SCHEME: Final = "unix://"
UNIX_HOST_URL: Final = "http://localhost"
_NUMERIC: Final = frozenset({"snowflake", "segment"})
_STRINGS: Final = frozenset({"uuid7", "uuid4"})
_QUIET_AFTER_FAILURE = 1.0  # seconds without background fetches after one failed


def split_base_url(base_url: str, unix_socket: str | None) -> tuple[str, str | None]:
    """(HTTP base URL, Unix socket path or None) from ``http://host:port`` or ``unix:///path``.

    Over a socket the HTTP requests still need a host for their URL and
    ``Host`` header; ``localhost`` is what the sidecar gets.
    """
    if base_url.startswith(UNIX_SCHEME):
        path = base_url[len(UNIX_SCHEME) :]
        if not path.startswith("/") or (unix_socket is not None and unix_socket != path):
            raise errors.InvalidArgument(
                f"base_url {base_url!r} must be unix:///absolute/path "
                "(and agree with unix_socket= when both are given)"
            )
        return UNIX_HOST_URL, path
    if unix_socket is not None:
        return UNIX_HOST_URL if base_url == DEFAULT_BASE_URL else base_url.rstrip("/"), unix_socket
    return base_url.rstrip("/"), None


class ClientClosed(errors.NebulaIdError):
    """The client was closed; it issues nothing more."""

    code = "client_closed"


class BufferEmpty(errors.NebulaIdError):
    """`take()` found no buffered ID; ``await next_id()`` waits for one instead."""

    code = "buffer_empty"


class IdClient:
    """Buffered IDs of one algorithm from one sidecar.

    `algorithm` is ``"snowflake"``, ``"segment"`` (the pool's first tag),
    ``"segment/<tag>"``, ``"uuid7"`` or ``"uuid4"``.  `batch_size` IDs are asked
    for at a time (at most the pool's ``maxBatchSize``, 1000 by default); the
    next batch is fetched once fewer than ``low_water * batch_size`` remain.
    `base_url` is ``http://host:port``, ``https://…`` or ``unix:///path/to/socket``
    (the same as passing `unix_socket`).  Batches come over one kept-alive
    connection of the client's own, with `timeout` seconds per batch request;
    `session` (an aiohttp session, used as given and left open) replaces it.  Use it from
    one event loop::

        async with IdClient(algorithm="snowflake") as ids:
            order_id = await ids.next_id()
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        algorithm: str = "snowflake",
        batch_size: int = 1000,
        low_water: float = 0.25,
        api_key: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 5.0,
        unix_socket: str | None = None,
        pipeline: int = 2,
    ) -> None:
        name, _, tag = algorithm.partition("/")
        if (
            name not in _NUMERIC | _STRINGS
            or (tag and name != "segment")
            or algorithm == "segment/"
        ):
            raise errors.InvalidArgument(
                f"algorithm must be snowflake, segment, segment/<tag>, uuid7 or uuid4, "
                f"got {algorithm!r}"
            )
        if batch_size < 1:
            raise errors.InvalidArgument(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= low_water <= 1.0:
            raise errors.InvalidArgument(f"low_water must be from 0 to 1, got {low_water}")
        if timeout <= 0:
            raise errors.InvalidArgument(f"timeout must be positive, got {timeout}")
        if not 1 <= pipeline <= 8:
            raise errors.InvalidArgument(f"pipeline must be from 1 to 8, got {pipeline}")
        self.base_url, self.unix_socket = split_base_url(base_url, unix_socket)
        self.algorithm = algorithm
        self.batch_size = batch_size
        self._tag = tag or None
        self._numeric = name in _NUMERIC
        path = name + ("/" + urllib.parse.quote(tag, safe="") if tag else "")
        path_qs = f"/v1/ids/{path}?count={batch_size}"
        self._url = f"{self.base_url}{path_qs}"
        # 64-bit IDs come as big-endian int64s: a tenth of the JSON's decoding cost.
        self._headers = {"Accept": BINARY if self._numeric else "application/json"}
        if api_key is not None:
            self._headers["X-API-Key"] = api_key
        self._timeout = timeout
        self._session = session
        try:
            target = wire.Target.of(self.base_url, self.unix_socket)
        except ValueError as e:
            raise errors.InvalidArgument(str(e)) from e
        # Without a session of the caller's, batches go over the client's own
        # kept-alive connection (`wire`), which costs a fraction of a general client.
        self._connection = wire.AsyncConnection(target) if session is None else None
        self._pipeline = pipeline if session is None else 1
        self._request_bytes = wire.request_bytes(target, path_qs, self._headers)
        self._buffer: collections.deque[Id] = collections.deque()
        # Above the low mark a pop leaves at least the mark: no check is needed.
        self._low_mark = int(batch_size * low_water)
        self._inflight: asyncio.Task[errors.NebulaIdError | None] | None = None
        self._quiet_until = 0.0
        self._closed = False
        self.requests = 0
        """Fetches so far (answered or not); each asks for `pipeline` batches."""

    # --- the hot path -----------------------------------------------------------------

    async def next_id(self) -> Id:
        """The next ID; waits for a batch only when the buffer is empty."""
        buffer = self._buffer
        if len(buffer) > self._low_mark:
            return buffer.popleft()
        if self._maybe_prefetch():
            # The fetch is a task: in a loop that never suspends it would not even
            # send its request before the buffer ran dry.  One yield sends it, and
            # the sidecar works in parallel while the app uses what is left.
            await asyncio.sleep(0)
        while not buffer:
            await self._refill()
        return buffer.popleft()

    def take(self) -> Id:
        """The next buffered ID without awaiting; `BufferEmpty` when there is none.

        Like `next_id`, it starts the next fetch when the buffer runs low, so it
        must be called from the event loop's thread; the fetch progresses only
        while the caller awaits something.
        """
        buffer = self._buffer
        if len(buffer) > self._low_mark:
            return buffer.popleft()
        self._check_open()
        self._maybe_prefetch()
        if not buffer:
            raise BufferEmpty(f"no {self.algorithm} ID is buffered; await next_id() instead")
        return buffer.popleft()

    async def next_ids(self, n: int) -> list[Id]:
        """The next `n` IDs, in order.  IDs taken before a failure are dropped."""
        if n < 0:
            raise errors.InvalidArgument(f"n must not be negative, got {n}")
        buffer = self._buffer
        taken: list[Id] = []
        while len(taken) < n:
            if not buffer:
                await self._refill()
                continue
            want = n - len(taken)
            if want >= len(buffer):
                taken.extend(buffer)
                buffer.clear()
            else:
                taken.extend([buffer.popleft() for _ in range(want)])
            if self._maybe_prefetch():
                await asyncio.sleep(0)  # as in next_id: let the fetch send its request
        return taken

    @property
    def buffered(self) -> int:
        """IDs held locally right now."""
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- fetching -------------------------------------------------------------------------

    def _maybe_prefetch(self) -> bool:
        """Start the next fetch in the background once the buffer is at the low mark or below.

        True when it started one.  After a failed fetch the background waits
        `_QUIET_AFTER_FAILURE` (or the answer's Retry-After), so a sidecar in
        trouble is not asked on every call; an empty buffer still asks at once
        (`_refill`).
        """
        if self._inflight is not None or self._closed or len(self._buffer) > self._low_mark:
            return False
        if self._quiet_until and asyncio.get_running_loop().time() < self._quiet_until:
            return False
        self._start_fetch()
        return True

    def _start_fetch(self) -> asyncio.Task[errors.NebulaIdError | None]:
        task = asyncio.get_running_loop().create_task(self._fetch(), name="nebula-id-prefetch")
        self._inflight = task
        return task

    async def _refill(self) -> None:
        """Wait for the fetch in flight (or start one); raise its error if it brought nothing."""
        self._check_open()
        task = self._inflight or self._start_fetch()
        try:
            # Shielded: a caller that gives up must not cancel a fetch others wait for.
            failure = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and (current is None or not current.cancelling()):
                raise ClientClosed(
                    f"the client closed while waiting for {self.algorithm} IDs"
                ) from None
            raise
        if failure is not None and not self._buffer:
            raise failure

    async def _fetch(self) -> errors.NebulaIdError | None:
        """Batches into the buffer; the error instead of raising it, so no task fails unseen."""
        self.requests += 1
        failure: errors.NebulaIdError | None
        try:
            batches, failure = await self._request()
            for ids in batches:
                self._buffer.extend(ids)
        except errors.NebulaIdError as e:
            failure = e
        except Exception as e:  # a closed user session, or a bug: still ours to report
            failure = errors.NebulaIdError(f"fetching {self.algorithm} IDs failed: {e!r}")
            failure.__cause__ = e
        self._inflight = None
        if failure is None:
            self._quiet_until = 0.0
            return None
        pause = getattr(failure, "retry_after", _QUIET_AFTER_FAILURE)
        self._quiet_until = asyncio.get_running_loop().time() + max(pause, 0.001)
        return failure

    async def _request(
        self,
    ) -> tuple[list[list[int] | list[str]], errors.NebulaIdError | None]:
        """The batches of one round trip (`pipeline` requests sent together), in order.

        With a failed answer: the batches before it and its error.  Their IDs
        were issued for this client, so it uses them.
        """
        connection = self._connection
        try:
            if connection is None:
                assert self._session is not None
                found = [await self._session_request(self._session)]
            else:
                async with asyncio.timeout(self._timeout):
                    found = await connection.get(self._request_bytes, times=self._pipeline)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            if connection is not None:
                connection.close()
            raise answers.SidecarUnreachable(
                f"cannot reach the nebula-id sidecar at {self.where}: "
                f"{type(e).__name__}: {e}".rstrip(": ")
            ) from e
        except BaseException:
            if connection is not None:
                connection.close()  # cancelled mid-answer: the stream is out of step
            raise
        batches: list[list[int] | list[str]] = []
        for answer in found:
            if answer.status != 200:
                failure = answers.error_from(
                    answer.status,
                    answer.body,
                    retry_after=answer.headers.get("retry-after"),
                    tag=self._tag,
                )
                return batches, failure
            if answer.content_type == BINARY:
                batches.append(answers.ids_from_binary(answer.body))
            else:
                batches.append(answers.ids_from(answer.body, numeric=self._numeric))
        return batches, None

    async def _session_request(self, session: aiohttp.ClientSession) -> wire.Answer:
        """The batch request through the caller's aiohttp session."""
        async with session.get(self._url, headers=self._headers) as response:
            body = await response.read()
            headers = {k.lower(): v for k, v in response.headers.items()}
            return wire.Answer(response.status, headers, body)

    @property
    def where(self) -> str:
        """The sidecar's address, for messages: its URL or ``unix:<path>``."""
        return f"unix:{self.unix_socket}" if self.unix_socket else self.base_url

    # --- life cycle ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed(f"the {self.algorithm} client is closed")

    async def close(self) -> None:
        """Cancel the fetch in flight, drop the buffer, close the session if it is ours."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # never raises the task's CancelledError
        if self._connection is not None:
            self._connection.close()

    async def __aenter__(self) -> IdClient:
        """Start filling the buffer at once, so the first `next_id` rarely waits."""
        self._check_open()
        if self._inflight is None and not self._buffer:
            self._start_fetch()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.close()
