"""`SyncIdClient`: the buffered client for applications without asyncio, safe across threads.

The same prefetch as `IdClient`: batches land in a deque, and a background
thread fetches the next ones once fewer than ``low_water * batch_size`` remain.
Above that mark `next_id` is a deque pop (atomic, so no lock is taken); at or
below it the caller takes the lock, wakes the fetcher, and waits only if the
deque is empty.  One thread fetches, one round trip at a time, and appends the
batches in the order they were issued, so no ID is returned twice and IDs from
one sidecar keep their order across all threads together.
"""

from __future__ import annotations

import threading
import time
import types

from nebula_id import errors
from nebula_id.client import prefetch, wire


class SyncIdClient(prefetch.Prefetching):
    """Buffered IDs of one algorithm from one sidecar, for threads.

    Arguments as for `nebula_id.client.IdClient` (no `session`).  Use it as a
    context manager, or call `close()`; the fetcher thread is a daemon and
    stops with it::

        with SyncIdClient(algorithm="snowflake") as ids:
            order_id = ids.next_id()
    """

    def __init__(
        self,
        base_url: str = prefetch.DEFAULT_BASE_URL,
        *,
        algorithm: str = "snowflake",
        batch_size: int = 1000,
        low_water: float = 0.25,
        api_key: str | None = None,
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
        self._request = wire.request_bytes(self._target, self._path_qs, self._headers)
        self._connection = wire.SyncConnection(self._target, timeout=timeout)
        self._changed = threading.Condition(threading.Lock())
        self._wanted = False  # a caller saw the low mark: fetch now
        self._waiting = 0  # callers blocked on an empty buffer
        self._fetches_done = 0
        self._last_failure: errors.NebulaIdError | None = None
        self._fetcher: threading.Thread | None = None

    # --- the hot path -----------------------------------------------------------------

    def next_id(self) -> prefetch.Id:
        """The next ID; blocks for a batch only when the buffer is empty."""
        buffer = self._buffer
        if len(buffer) > self._low_mark:
            try:
                return buffer.popleft()
            except IndexError:  # other threads emptied it since the check
                pass
        return self._next_slow()

    def next_ids(self, n: int) -> list[prefetch.Id]:
        """The next `n` IDs, in order among themselves (other threads may interleave)."""
        if n < 0:
            raise errors.InvalidArgument(f"n must not be negative, got {n}")
        return [self.next_id() for _ in range(n)]

    # --- waiting and fetching -----------------------------------------------------------

    def _next_slow(self) -> prefetch.Id:
        with self._changed:
            seen = self._fetches_done
            while True:
                self._check_open()
                try:
                    value = self._buffer.popleft()
                except IndexError:
                    pass
                else:
                    if len(self._buffer) <= self._low_mark and not self._wanted:
                        self._wanted = True
                        self._ensure_fetcher()
                        self._changed.notify_all()
                    return value
                if self._fetches_done != seen and self._last_failure is not None:
                    raise self._last_failure
                self._waiting += 1
                self._ensure_fetcher()
                self._changed.notify_all()
                try:
                    self._changed.wait()
                finally:
                    self._waiting -= 1

    def _ensure_fetcher(self) -> None:
        """Start the fetcher thread (called with the lock held)."""
        if self._fetcher is None:
            self._fetcher = threading.Thread(
                target=self._fetch_forever, name="nebula-id-prefetch", daemon=True
            )
            self._fetcher.start()

    def _fetch_forever(self) -> None:
        changed = self._changed
        while True:
            with changed:
                while not self._closed and not self._should_fetch():
                    wait = self._quiet_until - time.monotonic() if self._wanted else None
                    changed.wait(timeout=max(wait, 0.001) if wait is not None else None)
                if self._closed:
                    return
                self._wanted = False
            batches, failure = self._fetch()
            with changed:
                for ids in batches:
                    self._buffer.extend(ids)
                self._fetches_done += 1
                self._last_failure = failure
                if failure is None:
                    self._quiet_until = 0.0
                else:
                    pause = failure.retry_after
                    if pause is None:
                        pause = prefetch.QUIET_AFTER_FAILURE
                    self._quiet_until = time.monotonic() + max(pause, 0.001)
                # Still low (a burst took the new batches at once): fetch again.
                self._wanted = len(self._buffer) <= self._low_mark
                changed.notify_all()

    def _should_fetch(self) -> bool:
        """With the lock held: a caller waits on an empty buffer, or it is low and not quiet."""
        if self._waiting and not self._buffer:
            return True
        return self._wanted and time.monotonic() >= self._quiet_until

    def _fetch(self) -> tuple[prefetch.Batches, errors.NebulaIdError | None]:
        """One round trip: the batches in order, and the error of a refused one."""
        self.requests += 1
        try:
            found = self._connection.get(self._request, times=self._pipeline)
        except OSError as e:
            self._connection.close()
            return [], self._unreachable(e)
        batches: prefetch.Batches = []
        try:
            failure = self._read_batches(found, batches)
        except errors.NebulaIdError as e:
            return batches, e
        return batches, failure

    # --- life cycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the fetcher, drop the buffer, close the connection; waiters get `ClientClosed`."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._buffer.clear()
            self._changed.notify_all()
            fetcher = self._fetcher
        if fetcher is not None and fetcher is not threading.current_thread():
            fetcher.join(timeout=10)
        self._connection.close()

    def __enter__(self) -> SyncIdClient:
        """Start filling the buffer at once, so the first `next_id` rarely waits."""
        with self._changed:
            self._check_open()
            self._wanted = True
            self._ensure_fetcher()
            self._changed.notify_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()
