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
import types
from typing import Final

import aiohttp

from nebula_id import errors
from nebula_id.client import prefetch, wire

# The client's names, also reachable from here.
Id = prefetch.Id
ClientClosed = prefetch.ClientClosed
DEFAULT_BASE_URL: Final = prefetch.DEFAULT_BASE_URL
split_base_url = prefetch.split_base_url


class BufferEmpty(errors.NebulaIdError):
    """`take()` found no buffered ID; ``await next_id()`` waits for one instead."""

    code = "buffer_empty"


class IdClient(prefetch.Prefetching):
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
        super().__init__(
            base_url,
            algorithm=algorithm,
            batch_size=batch_size,
            low_water=low_water,
            api_key=api_key,
            timeout=timeout,
            unix_socket=unix_socket,
            pipeline=pipeline,
        )
        self._url = f"{self.base_url}{self._path_qs}"
        self._timeout = timeout
        self._session = session
        # Without a session of the caller's, batches go over the client's own
        # kept-alive connection (`wire`), which costs a fraction of a general client.
        self._connection = wire.AsyncConnection(self._target) if session is None else None
        if session is not None:
            self._pipeline = 1
        self._request_bytes = wire.request_bytes(self._target, self._path_qs, self._headers)
        self._inflight: asyncio.Task[errors.NebulaIdError | None] | None = None

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

    # --- fetching -------------------------------------------------------------------------

    def _maybe_prefetch(self) -> bool:
        """Start the next fetch in the background once the buffer is at the low mark or below.

        True when it started one.  After a failed fetch the background waits
        `prefetch.QUIET_AFTER_FAILURE` (or the answer's Retry-After), so a sidecar in
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
        pause = failure.retry_after
        if pause is None:
            pause = prefetch.QUIET_AFTER_FAILURE
        self._quiet_until = asyncio.get_running_loop().time() + max(pause, 0.001)
        return failure

    async def _request(self) -> tuple[prefetch.Batches, errors.NebulaIdError | None]:
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
            raise self._unreachable(e) from e
        except BaseException:
            if connection is not None:
                connection.close()  # cancelled mid-answer: the stream is out of step
            raise
        batches: prefetch.Batches = []
        failure = self._read_batches(found, batches)
        return batches, failure

    async def _session_request(self, session: aiohttp.ClientSession) -> wire.Answer:
        """The batch request through the caller's aiohttp session."""
        async with session.get(self._url, headers=self._headers) as response:
            body = await response.read()
            headers = {k.lower(): v for k, v in response.headers.items()}
            return wire.Answer(response.status, headers, body)

    # --- life cycle ---------------------------------------------------------------------

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
