"""Segment IDs: ranges from a database, served from a double buffer (Leaf's design).

A range ``[start, end)`` comes from one atomic database update (a
`SegmentStore`; the SQLite and PostgreSQL adapters live elsewhere) and is never
handed out twice.  Each tag keeps a current range and, once `prefetch_ratio` of
it is used, loads the next one in the background, so requests switch to it
without waiting.  A request waits for a load only when both buffers are empty,
and gets `errors.SegmentExhausted` when that load fails.

Every datacenter numbers its ranges from its own base, ``dc_id << (63 -
datacenterBits)``, so ranges from different datacenters never overlap and
failover between them cannot repeat an ID.

Only stdlib asyncio is used here; the clock is injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol

from nebula_id import clock as clocks
from nebula_id import errors
from nebula_id.core import step as steps
from nebula_id.core.jsontypes import JsonObject
from nebula_id.core.tags import Tag

ID_BITS = 63


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentRange:
    """Final IDs ``[start, end)`` of one tag, allocated in `datacenter` with `step`."""

    start: int
    end: int
    datacenter: str
    step: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise errors.StorageError(
                f"segment range [{self.start}, {self.end}) from {self.datacenter!r} is empty "
                "or negative"
            )

    @property
    def size(self) -> int:
        return self.end - self.start


class SegmentStore(Protocol):
    """Where ranges come from: one datacenter's database, or a failover over several."""

    async def allocate(self, tag: str, step: int) -> SegmentRange:
        """Reserve the next `step` IDs of `tag` in one atomic update.

        Raises `errors.StorageError` when the database is unreachable.
        """


def datacenter_base(datacenter_id: int, datacenter_bits: int) -> int:
    """The first ID of a datacenter's counter space: ``dc_id << (63 - bits)``."""
    if not 0 <= datacenter_bits < ID_BITS:
        raise errors.InvalidLayout(f"datacenterBits must be 0..62, got {datacenter_bits}")
    if not 0 <= datacenter_id < (1 << datacenter_bits):
        raise errors.InvalidLayout(
            f"datacenter ID {datacenter_id} does not fit in {datacenter_bits} bits"
        )
    return datacenter_id << (ID_BITS - datacenter_bits)


def counter_limit(datacenter_bits: int) -> int:
    """How many IDs each datacenter's counter can hand out: ``1 << (63 - bits)``."""
    if not 0 <= datacenter_bits < ID_BITS:
        raise errors.InvalidLayout(f"datacenterBits must be 0..62, got {datacenter_bits}")
    return 1 << (ID_BITS - datacenter_bits)


def counter_above(floor_id: int, datacenter_id: int, datacenter_bits: int) -> int:
    """The lowest counter with which a datacenter issues only IDs above `floor_id`.

    A datacenter issues ``base + counter`` for counters from its stored value
    on, so the answer is ``floor_id + 1 - base`` (0 when the whole slice is
    already above).  Raises `errors.InvalidPool` when the slice ends at or
    below `floor_id`: that datacenter could then issue no ID above it at all.
    """
    if floor_id < 0:
        raise errors.InvalidArgument(f"an ID floor must not be negative, got {floor_id}")
    base = datacenter_base(datacenter_id, datacenter_bits)
    limit = counter_limit(datacenter_bits)
    needed = floor_id + 1 - base
    if needed >= limit:
        raise errors.InvalidPool(
            f"datacenter ID {datacenter_id} with datacenterBits={datacenter_bits} issues segment "
            f"IDs in [{base}, {base + limit}), all at or below {floor_id}: it can never issue "
            "an ID above the old system's; give it a higher datacenter ID or use fewer "
            "datacenterBits"
        )
    return max(0, needed)


class SegmentBuffer:
    """The pure double buffer of one tag: a current range with a cursor, and a next range.

    Invariant: when the current range is used up and a next one is present, the
    next one has already become current, so `current` only ever runs dry when
    there is nothing to switch to.
    """

    __slots__ = ("_current", "_cursor", "_end", "_next", "_prefetch_at", "_prefetch_ratio")

    def __init__(self, *, prefetch_ratio: float = 0.1) -> None:
        if not 0.0 <= prefetch_ratio <= 1.0:
            raise errors.ConfigError(f"prefetch_ratio must be 0..1, got {prefetch_ratio}")
        self._prefetch_ratio = prefetch_ratio
        self._current: SegmentRange | None = None
        self._cursor = 0
        self._end = 0  # end of the current range (0 when there is none)
        self._prefetch_at = 0  # the cursor at which the next range is wanted
        self._next: SegmentRange | None = None

    @property
    def current(self) -> SegmentRange | None:
        return self._current

    @property
    def next(self) -> SegmentRange | None:
        return self._next

    @property
    def cursor(self) -> int:
        """The next ID the current range hands out."""
        return self._cursor

    def remaining(self) -> int:
        """IDs left in the current range."""
        return 0 if self._current is None else self._current.end - self._cursor

    def available(self) -> int:
        """IDs left in both ranges."""
        return self.remaining() + (0 if self._next is None else self._next.size)

    def offer(self, segment: SegmentRange) -> None:
        """Add a freshly loaded range: it becomes current if that is used up, else next."""
        if self.remaining() == 0:
            self._make_current(segment)
        elif self._next is None:
            self._next = segment
        else:
            raise errors.NebulaIdError("both segment buffers are full; a load was not expected")

    def should_prefetch(self) -> bool:
        """True when the next range should be loaded now."""
        return self._next is None and self._cursor >= self._prefetch_at

    def take(self, count: int) -> list[int]:
        """Up to `count` IDs, switching to the next range without waiting.

        Fewer than `count` come back only when both ranges are used up.
        """
        cursor = self._cursor
        if cursor + count < self._end:  # the common case: no switch
            self._cursor = cursor + count
            return list(range(cursor, cursor + count))
        return self._take_across(count)

    def take_one(self) -> int | None:
        """One ID, as `take(1)` would hand it out, without building a list; None when dry."""
        cursor = self._cursor
        if cursor + 1 < self._end:  # the common case: no switch
            self._cursor = cursor + 1
            return cursor
        ids = self._take_across(1)
        return ids[0] if ids else None

    def _make_current(self, segment: SegmentRange) -> None:
        self._current = segment
        self._cursor = segment.start
        self._end = segment.end
        self._prefetch_at = segment.start + math.ceil(self._prefetch_ratio * segment.size)

    def _take_across(self, count: int) -> list[int]:
        ids: list[int] = []
        wanted = count
        while wanted > 0 and self._current is not None:
            cursor = self._cursor
            taken = min(wanted, self._current.end - cursor)
            if taken > 0:
                ids.extend(range(cursor, cursor + taken))
                self._cursor = cursor + taken
                wanted -= taken
            if self._cursor >= self._current.end:
                if self._next is None:
                    break
                following, self._next = self._next, None
                self._make_current(following)
        return ids


@dataclasses.dataclass(slots=True)
class _TagState:
    """The allocator's bookkeeping for one tag."""

    settings: Tag
    buffer: SegmentBuffer
    step: int
    last_load_ms: int | None = None
    loading: asyncio.Task[None] | None = None
    last_error: str | None = None
    failures: int = 0
    retry_at: float = 0.0  # monotonic; no new load before this after a failure
    loads: int = 0
    # The end of the highest range seen per datacenter: a store that hands out
    # an overlapping range is refused rather than trusted.
    high_water: dict[str, int] = dataclasses.field(default_factory=dict)


class SegmentAllocator:
    """Serves segment IDs for every configured tag (a `nebula_id.sources.SegmentSource`)."""

    def __init__(
        self,
        store: SegmentStore,
        tags: Sequence[Tag],
        *,
        clock: clocks.Clock,
        prefetch_ratio: float = 0.1,
        load_timeout: float = 5.0,
        retry_backoff: float = 0.1,
        max_retry_backoff: float = 2.0,
    ) -> None:
        names = [t.name for t in tags]
        if len(set(names)) != len(names):
            raise errors.ConfigError(f"segment tags must be unique, got {names}")
        if load_timeout <= 0:
            raise errors.ConfigError(f"load_timeout must be positive, got {load_timeout}")
        self._store = store
        self._clock = clock
        self._load_timeout = load_timeout
        self._retry_backoff = retry_backoff
        self._max_retry_backoff = max_retry_backoff
        self._tags: dict[str, _TagState] = {
            t.name: _TagState(
                settings=t, buffer=SegmentBuffer(prefetch_ratio=prefetch_ratio), step=t.step
            )
            for t in tags
        }

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the first range of every tag; failures are recorded, not raised."""
        loads = [self._start_load(state) for state in self._tags.values()]
        await asyncio.gather(*(asyncio.shield(task) for task in loads if task is not None))

    async def close(self) -> None:
        """Cancel background loads and wait for them to end."""
        tasks = [s.loading for s in self._tags.values() if s.loading is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- serving ---------------------------------------------------------------------

    def tags(self) -> list[str]:
        return list(self._tags)

    def take_one(self, tag: str) -> int | None:
        """One ID of `tag` when its buffers hold one, without awaiting; else None.

        The same ID `next_ids(tag, 1)` would return; None means "await
        `next_ids`", which waits for a range.  Single-ID requests take this path.
        """
        state = self._tags.get(tag)
        if state is None:
            raise errors.UnknownTag(tag, list(self._tags))
        buffer = state.buffer
        value = buffer.take_one()
        if value is None:
            return None
        if buffer.should_prefetch():
            self._start_load(state)
        return value

    async def next_ids(self, tag: str, count: int) -> list[int]:
        """`count` IDs of `tag`, increasing within each range."""
        state = self._tags.get(tag)
        if state is None:
            raise errors.UnknownTag(tag, list(self._tags))
        if count < 1:
            raise errors.InvalidArgument(f"count must be at least 1, got {count}")
        buffer = state.buffer
        ids = buffer.take(count)
        while len(ids) < count:
            await self._refill(state)
            ids.extend(buffer.take(count - len(ids)))
        if buffer.should_prefetch():
            self._start_load(state)
        return ids

    def ready_reason(self) -> str | None:
        """None when every tag can serve from its buffers now."""
        for state in self._tags.values():
            if state.buffer.available() == 0:
                return "segments_exhausted" if state.last_error else "not_ready"
        return None

    def info(self) -> JsonObject:
        result: JsonObject = {}
        for name, state in self._tags.items():
            buffer = state.buffer
            current, following = buffer.current, buffer.next
            result[name] = {
                "range": None if current is None else [current.start, current.end],
                "cursor": buffer.cursor if current is not None else None,
                "remaining": buffer.remaining(),
                "next_ready": following is not None,
                "next_range": None if following is None else [following.start, following.end],
                "step": state.step,
                "min_step": state.settings.step,
                "max_step": state.settings.max_step,
                "datacenter": None if current is None else current.datacenter,
                "loading": state.loading is not None,
                "loads": state.loads,
                "last_error": state.last_error,
            }
        return result

    # --- loading ---------------------------------------------------------------------

    async def _refill(self, state: _TagState) -> None:
        """Both buffers are empty: wait for a load, or raise `SegmentExhausted`."""
        task = state.loading
        if task is None:
            wait = state.retry_at - self._clock.monotonic()
            if wait > 0:
                raise errors.SegmentExhausted(
                    f"no segment IDs left for tag {state.settings.name!r}; the last load failed "
                    f"({state.last_error}), retrying in {wait:.1f} s",
                    retry_after=wait,
                )
            task = self._start_load(state)
            assert task is not None
        # Shielded: a cancelled request must not cancel the load others wait for.
        await asyncio.shield(task)
        # A successful load that other requests already used up is not a
        # failure: the caller simply asks again.
        if state.buffer.available() == 0 and state.last_error is not None:
            raise errors.SegmentExhausted(
                f"no segment IDs left for tag {state.settings.name!r} and loading failed: "
                f"{state.last_error}",
                retry_after=max(state.retry_at - self._clock.monotonic(), 0.1),
            )

    def _start_load(self, state: _TagState) -> asyncio.Task[None] | None:
        """Start a background load unless one runs, the buffers are full, or we back off."""
        if state.loading is not None:
            return state.loading
        if state.buffer.next is not None:
            return None
        if self._clock.monotonic() < state.retry_at:
            return None
        state.loading = asyncio.get_running_loop().create_task(
            self._load(state), name=f"nebula-id segment load {state.settings.name}"
        )
        return state.loading

    async def _load(self, state: _TagState) -> None:
        settings = state.settings
        now_ms = int(self._clock.monotonic() * 1000)
        step = steps.next_step(
            current=state.step,
            min_step=settings.step,
            max_step=settings.max_step,
            last_load_ms=state.last_load_ms,
            now_ms=now_ms,
        )
        try:
            segment = await asyncio.wait_for(
                self._store.allocate(settings.name, step), self._load_timeout
            )
            self._check_fresh(state, segment)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._failed(state, f"the database did not answer within {self._load_timeout} s")
        except errors.NebulaIdError as e:
            self._failed(state, e.message)
        except Exception as e:  # a store bug must not kill the task silently
            self._failed(state, f"{type(e).__name__}: {e}")
        else:
            state.buffer.offer(segment)
            state.step = step
            state.last_load_ms = now_ms
            state.loads += 1
            state.failures = 0
            state.retry_at = 0.0
            state.last_error = None
        finally:
            state.loading = None

    def _check_fresh(self, state: _TagState, segment: SegmentRange) -> None:
        high = state.high_water.get(segment.datacenter)
        if high is not None and segment.start < high:
            raise errors.StorageError(
                f"datacenter {segment.datacenter!r} returned range [{segment.start}, "
                f"{segment.end}) for tag {state.settings.name!r}, which overlaps IDs already "
                f"served (up to {high}); refusing it"
            )
        state.high_water[segment.datacenter] = segment.end

    def _failed(self, state: _TagState, reason: str) -> None:
        state.failures += 1
        state.last_error = reason
        backoff = min(self._retry_backoff * 2 ** (state.failures - 1), self._max_retry_backoff)
        state.retry_at = self._clock.monotonic() + backoff
