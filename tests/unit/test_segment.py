"""The segment double buffer and allocator, over an in-memory `SegmentStore`.

The store here is our own Protocol's simplest implementation (a counter per
tag), not a stand-in for PostgreSQL: the real stores have their own tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nebula_id import errors
from nebula_id.clock import FakeClock
from nebula_id.core.segment import (
    SegmentAllocator,
    SegmentBuffer,
    SegmentRange,
    counter_limit,
    datacenter_base,
)
from nebula_id.core.tags import Tag

T = TypeVar("T")


class MemoryStore:
    """Ranges from a counter per tag, with switches to make it slow, fail or lie."""

    def __init__(self, *, datacenter: str = "dc-a", base: int = 0) -> None:
        self.datacenter = datacenter
        self.base = base
        self.counters: dict[str, int] = {}
        self.calls: list[tuple[str, int]] = []
        self.fail = False
        self.gate: asyncio.Event | None = None
        self.rewind = False

    async def allocate(self, tag: str, step: int) -> SegmentRange:
        self.calls.append((tag, step))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise errors.StorageError("connection refused")
        start = self.counters.get(tag, 0)
        if self.rewind:
            start = 0
        self.counters[tag] = start + step
        return SegmentRange(
            start=self.base + start,
            end=self.base + start + step,
            datacenter=self.datacenter,
            step=step,
        )


def without_waiting(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must finish without ever suspending."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the call had to wait")


async def settle() -> None:
    """Let background tasks run until they block."""
    for _ in range(5):
        await asyncio.sleep(0)


def rng(start: int, end: int, dc: str = "dc-a") -> SegmentRange:
    return SegmentRange(start=start, end=end, datacenter=dc, step=end - start)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- values and helpers --------------------------------------------------------------


def test_datacenter_bases_split_the_63_bit_space() -> None:
    assert datacenter_base(0, 5) == 0
    assert datacenter_base(1, 5) == 1 << 58
    assert datacenter_base(31, 5) == 31 << 58
    assert counter_limit(5) == 1 << 58
    assert datacenter_base(31, 5) + counter_limit(5) == 1 << 63
    assert counter_limit(0) == 1 << 63
    with pytest.raises(errors.InvalidLayout, match="does not fit in 5 bits"):
        datacenter_base(32, 5)
    with pytest.raises(errors.InvalidLayout):
        counter_limit(63)


def test_range_must_not_be_empty() -> None:
    assert rng(10, 20).size == 10
    with pytest.raises(errors.StorageError, match="empty"):
        rng(5, 5)
    with pytest.raises(errors.StorageError):
        rng(-1, 5)


def test_tags_are_validated() -> None:
    with pytest.raises(errors.InvalidArgument, match="step must be at least 1"):
        Tag(name="t", step=0, max_step=10)
    with pytest.raises(errors.InvalidArgument, match="maxStep"):
        Tag(name="t", step=10, max_step=5)
    with pytest.raises(errors.InvalidArgument, match="lowercase letters"):
        Tag(name="Bad Tag")


# --- the pure buffer -------------------------------------------------------------------


def test_buffer_takes_from_the_current_range() -> None:
    buffer = SegmentBuffer()
    assert buffer.take(3) == []
    buffer.offer(rng(100, 110))
    assert buffer.take(3) == [100, 101, 102]
    assert buffer.remaining() == 7
    assert buffer.cursor == 103


def test_buffer_switches_to_next_within_one_take() -> None:
    buffer = SegmentBuffer()
    buffer.offer(rng(0, 5))
    buffer.offer(rng(50, 60))
    assert buffer.take(8) == [0, 1, 2, 3, 4, 50, 51, 52]
    assert buffer.current == rng(50, 60)
    assert buffer.next is None


def test_buffer_take_one_hands_out_what_take_would() -> None:
    one, many = SegmentBuffer(), SegmentBuffer()
    assert one.take_one() is None
    for buffer in (one, many):
        buffer.offer(rng(0, 3))
        buffer.offer(rng(50, 52))
    taken = [one.take_one() for _ in range(6)]
    assert taken == [0, 1, 2, 50, 51, None]
    assert many.take(6) == [0, 1, 2, 50, 51]
    assert one.current == many.current
    assert one.available() == many.available() == 0


def test_buffer_switches_as_soon_as_current_runs_dry() -> None:
    buffer = SegmentBuffer()
    buffer.offer(rng(0, 5))
    buffer.offer(rng(50, 60))
    assert buffer.take(5) == [0, 1, 2, 3, 4]
    assert buffer.current == rng(50, 60)
    assert buffer.available() == 10


def test_buffer_returns_fewer_when_both_are_used_up() -> None:
    buffer = SegmentBuffer()
    buffer.offer(rng(0, 2))
    buffer.offer(rng(10, 12))
    assert buffer.take(10) == [0, 1, 10, 11]
    assert buffer.available() == 0
    assert buffer.take(1) == []
    buffer.offer(rng(20, 30))
    assert buffer.current == rng(20, 30)
    assert buffer.take(1) == [20]


def test_buffer_prefetches_after_ten_percent() -> None:
    buffer = SegmentBuffer()
    assert buffer.should_prefetch()  # nothing loaded yet
    buffer.offer(rng(0, 100))
    buffer.take(9)
    assert not buffer.should_prefetch()
    buffer.take(1)
    assert buffer.should_prefetch()
    buffer.offer(rng(100, 200))
    assert not buffer.should_prefetch()  # the next range is already there


def test_buffer_prefetch_ratio_is_configurable() -> None:
    buffer = SegmentBuffer(prefetch_ratio=0.5)
    buffer.offer(rng(0, 100))
    buffer.take(49)
    assert not buffer.should_prefetch()
    buffer.take(1)
    assert buffer.should_prefetch()
    with pytest.raises(errors.ConfigError):
        SegmentBuffer(prefetch_ratio=1.5)


def test_buffer_refuses_a_third_range() -> None:
    buffer = SegmentBuffer()
    buffer.offer(rng(0, 10))
    buffer.offer(rng(10, 20))
    with pytest.raises(errors.NebulaIdError):
        buffer.offer(rng(20, 30))


# --- the allocator -------------------------------------------------------------------------


def allocator(store: MemoryStore, clock: FakeClock, *tags: Tag, **kwargs: Any) -> SegmentAllocator:
    return SegmentAllocator(
        store,
        tags or (Tag(name="order", step=100, max_step=10_000),),
        clock=clock,
        **kwargs,
    )


async def test_serves_increasing_ids_from_loaded_ranges(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock)
    assert alloc.ready_reason() == "not_ready"
    await alloc.start()
    assert alloc.ready_reason() is None
    ids = [*await alloc.next_ids("order", 5), *await alloc.next_ids("order", 1)]
    assert ids == [0, 1, 2, 3, 4, 5]
    await alloc.close()


async def test_take_one_serves_the_buffer_without_awaiting_and_prefetches(
    clock: FakeClock,
) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock, Tag(name="order", step=10, max_step=10))
    assert alloc.take_one("order") is None  # nothing loaded yet: await next_ids instead
    await alloc.start()
    taken = [alloc.take_one("order") for _ in range(5)]
    assert taken == [0, 1, 2, 3, 4]
    assert (await alloc.next_ids("order", 1)) == [5]  # the same sequence either way
    await settle()
    assert len(store.calls) == 2  # past 10 %: the next range was asked for
    rest = [alloc.take_one("order") for _ in range(14)]
    assert rest == [*range(6, 10), *range(10, 20)]
    assert alloc.take_one("order") is None  # both ranges used up, the third not loaded
    with pytest.raises(errors.UnknownTag):
        alloc.take_one("nope")
    await alloc.close()


async def test_unknown_tag_and_bad_count(clock: FakeClock) -> None:
    alloc = allocator(MemoryStore(), clock)
    await alloc.start()
    with pytest.raises(errors.UnknownTag) as caught:
        await alloc.next_ids("nope", 1)
    assert caught.value.known == ["order"]
    assert caught.value.http_status == 404
    with pytest.raises(errors.InvalidArgument):
        await alloc.next_ids("order", 0)
    assert alloc.tags() == ["order"]
    await alloc.close()


async def test_tags_must_be_unique(clock: FakeClock) -> None:
    tag = Tag(name="a", step=1, max_step=1)
    with pytest.raises(errors.ConfigError, match="unique"):
        SegmentAllocator(MemoryStore(), [tag, tag], clock=clock)


async def test_prefetch_starts_at_ten_percent_and_switch_does_not_wait(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock)
    await alloc.start()
    assert store.calls == [("order", 100)]
    without_waiting(alloc.next_ids("order", 9))
    await settle()
    assert len(store.calls) == 1  # 9 % used: no prefetch yet
    without_waiting(alloc.next_ids("order", 1))
    await settle()
    assert len(store.calls) == 2  # 10 % used: the next range is loaded in the background
    assert alloc.info()["order"]["next_ready"] is True
    # The database goes away; the switch to the next range must still not wait.
    store.gate = asyncio.Event()
    ids = without_waiting(alloc.next_ids("order", 150))
    assert ids == list(range(10, 100)) + list(range(100, 160))
    info = alloc.info()["order"]
    assert info["range"] == [100, 300]
    assert info["remaining"] == 140
    store.gate.set()
    await alloc.close()


async def test_waits_for_the_load_only_when_both_buffers_are_empty(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock, Tag(name="order", step=10, max_step=10))
    await alloc.start()
    store.gate = asyncio.Event()
    first = await alloc.next_ids("order", 10)  # uses up the range; a prefetch is now blocked
    assert first == list(range(10))
    waiting = asyncio.create_task(alloc.next_ids("order", 3))
    await settle()
    assert not waiting.done()
    assert alloc.info()["order"]["loading"] is True
    store.gate.set()
    assert await asyncio.wait_for(waiting, 1.0) == [10, 11, 12]
    await alloc.close()


async def test_batch_larger_than_the_buffers_loads_until_served(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock, Tag(name="order", step=10, max_step=10))
    await alloc.start()
    ids = await alloc.next_ids("order", 55)
    assert ids == list(range(55))
    await alloc.close()


async def test_concurrent_requests_never_share_an_id(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock, Tag(name="order", step=7, max_step=50))
    await alloc.start()
    results = await asyncio.gather(*(alloc.next_ids("order", 1 + i % 5) for i in range(200)))
    flat = list(itertools.chain.from_iterable(results))
    assert len(flat) == len(set(flat)) == sum(1 + i % 5 for i in range(200))
    for batch in results:
        assert batch == sorted(batch)
    await alloc.close()


async def test_exhausted_when_both_buffers_empty_and_loading_fails(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock, Tag(name="order", step=10, max_step=10))
    await alloc.start()
    store.fail = True
    assert await alloc.next_ids("order", 10) == list(range(10))
    await settle()  # the prefetch fails in the background
    with pytest.raises(errors.SegmentExhausted) as caught:
        await alloc.next_ids("order", 1)
    assert caught.value.reason == "segments_exhausted"
    assert "connection refused" in caught.value.message
    assert alloc.ready_reason() == "segments_exhausted"
    assert alloc.info()["order"]["last_error"] == "connection refused"
    await alloc.close()


async def test_failed_loads_back_off_then_retry(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock, Tag(name="order", step=10, max_step=10))
    store.fail = True
    await alloc.start()  # tolerated: recorded, not raised
    assert alloc.ready_reason() == "segments_exhausted"
    assert len(store.calls) == 1
    with pytest.raises(errors.SegmentExhausted, match="retrying in") as caught:
        await alloc.next_ids("order", 1)
    assert len(store.calls) == 1  # inside the backoff: the database is not asked again
    assert caught.value.retry_after == pytest.approx(0.1)
    clock.advance(0.2)
    with pytest.raises(errors.SegmentExhausted):
        await alloc.next_ids("order", 1)
    assert len(store.calls) == 2
    clock.advance(0.15)  # the second backoff is twice as long
    with pytest.raises(errors.SegmentExhausted, match="retrying in"):
        await alloc.next_ids("order", 1)
    assert len(store.calls) == 2
    store.fail = False
    clock.advance(1.0)
    assert await alloc.next_ids("order", 2) == [0, 1]
    assert alloc.ready_reason() is None
    assert alloc.info()["order"]["last_error"] is None
    await alloc.close()


async def test_buffers_keep_serving_while_the_database_is_down(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock, Tag(name="order", step=100, max_step=100))
    await alloc.start()
    await alloc.next_ids("order", 10)
    await settle()  # next range loaded
    store.fail = True
    served = await alloc.next_ids("order", 185)
    assert served == list(range(10, 195))
    assert alloc.ready_reason() is None
    await alloc.close()


async def test_slow_database_times_out(clock: FakeClock) -> None:
    store = MemoryStore()
    store.gate = asyncio.Event()  # never set: the database hangs
    alloc = allocator(store, clock, load_timeout=0.05)
    await alloc.start()
    assert alloc.ready_reason() == "segments_exhausted"
    assert "did not answer within 0.05 s" in str(alloc.info()["order"]["last_error"])
    await alloc.close()


async def test_step_doubles_for_busy_tags_and_halves_for_idle_ones(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock, Tag(name="order", step=10, max_step=40))
    await alloc.start()
    for _ in range(3):
        await alloc.next_ids("order", alloc.info()["order"]["remaining"])
        await settle()
    steps = [step for _, step in store.calls]
    assert steps[:4] == [10, 20, 40, 40]
    clock.advance(31 * 60)  # the tag went quiet for half an hour
    await alloc.next_ids("order", alloc.info()["order"]["remaining"])
    await settle()
    assert store.calls[-1][1] == 20
    assert alloc.info()["order"]["step"] == 20
    await alloc.close()


async def test_overlapping_range_from_the_store_is_refused(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock, Tag(name="order", step=10, max_step=10))
    await alloc.start()
    store.rewind = True  # e.g. a database restored from an old backup
    assert await alloc.next_ids("order", 10) == list(range(10))
    await settle()
    with pytest.raises(errors.SegmentExhausted, match="overlaps IDs already served"):
        await alloc.next_ids("order", 1)
    await alloc.close()


async def test_failover_ranges_come_from_the_other_datacenter(clock: FakeClock) -> None:
    store = MemoryStore(datacenter="dc-a", base=datacenter_base(0, 5))
    alloc = allocator(store, clock, Tag(name="order", step=10, max_step=10))
    await alloc.start()
    assert alloc.info()["order"]["datacenter"] == "dc-a"
    store.datacenter, store.base = "dc-b", datacenter_base(1, 5)
    store.counters.clear()
    ids = await alloc.next_ids("order", 15)
    assert ids[:10] == list(range(10))
    assert ids[10:] == [(1 << 58) + i for i in range(5)]
    assert alloc.info()["order"]["datacenter"] == "dc-b"
    await alloc.close()


async def test_several_tags_are_independent(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(
        store,
        clock,
        Tag(name="order", step=10, max_step=10),
        Tag(name="user", step=5, max_step=5),
    )
    await alloc.start()
    assert await alloc.next_ids("order", 2) == [0, 1]
    assert await alloc.next_ids("user", 2) == [0, 1]
    assert set(alloc.info()) == {"order", "user"}
    await alloc.close()


async def test_close_cancels_a_load_in_flight(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock)
    store.gate = asyncio.Event()
    starting = asyncio.create_task(alloc.start())
    await settle()
    assert alloc.info()["order"]["loading"] is True
    await alloc.close()
    assert alloc.info()["order"]["loading"] is False
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting


async def test_a_cancelled_request_does_not_cancel_the_shared_load(clock: FakeClock) -> None:
    store = MemoryStore()
    alloc = allocator(store, clock, Tag(name="order", step=10, max_step=10))
    await alloc.start()
    await alloc.next_ids("order", 10)
    store.gate = asyncio.Event()
    impatient = asyncio.create_task(alloc.next_ids("order", 1))
    patient = asyncio.create_task(alloc.next_ids("order", 1))
    await settle()
    impatient.cancel()
    await settle()
    store.gate.set()
    assert await asyncio.wait_for(patient, 1.0) == [10]
    await alloc.close()


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 40)), max_size=80))
def test_buffer_hands_out_each_offered_id_at_most_once_in_order(
    steps: list[tuple[bool, int]],
) -> None:
    buffer = SegmentBuffer()
    next_start = 0
    offered: set[int] = set()
    taken: list[int] = []
    for offer, size in steps:
        if offer and (buffer.remaining() == 0 or buffer.next is None):
            buffer.offer(rng(next_start, next_start + size))
            offered.update(range(next_start, next_start + size))
            next_start += size + 3  # ranges with gaps between them
        else:
            before = buffer.available()
            got = buffer.take(size)
            assert len(got) == min(size, before)
            taken.extend(got)
    assert all(a < b for a, b in itertools.pairwise(taken))
    assert set(taken) <= offered
    assert len(taken) + buffer.available() == len(offered)
