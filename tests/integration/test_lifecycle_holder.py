"""A worker-ID holder against a real etcd: no ID after the lease deadline, no mark going down.

A frozen process must not hand out IDs once its lease can no longer be proven, even
when it froze inside a wait of the generator (a clock-rollback wait or the spin to the
next millisecond).  And a mark write that etcd applies late, after a newer one, must
not lower the stored mark: a later holder waits past the stored mark only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

import prometheus_client

from nebula_id import errors
from nebula_id.etcd import claims, poolwatch, worker
from nebula_id.etcd import client as etcd
from nebula_id.etcd import source as sources
from tests.integration.test_worker_lease import Env, SkewClock, serving
from tests.support.waiting import eventually_async


class FreezingClock(SkewClock):
    """The real clocks; the next `sleep` of the generator can be made to freeze the process."""

    def __init__(self) -> None:
        super().__init__()
        self.freeze_s = 0.0
        self.froze = False
        self.stuck_ms: int | None = None

    def wall_ms(self) -> int:
        if self.stuck_ms is not None and not self.froze:
            return self.stuck_ms
        return super().wall_ms()

    def sleep(self, seconds: float) -> None:
        if self.freeze_s:
            frozen, self.freeze_s = self.freeze_s, 0.0
            self.froze = True
            time.sleep(frozen)  # the whole event loop stops, as under SIGSTOP
        time.sleep(seconds)


async def test_no_id_leaves_after_the_deadline_when_frozen_in_a_rollback_wait(
    etcd_endpoint: str, tmp_path: Path
) -> None:
    env = Env(etcd_endpoint, tmp_path, worker_bits=5, ttl=2)
    env.clock = FreezingClock()
    await env.apply()
    async with env.holder("frozen") as source:
        await eventually_async(lambda: serving(source), timeout=5, what="the holder to serve")
        before = source.next_ids(100)
        assert len(set(before)) == 100
        clock = env.clock
        assert isinstance(clock, FreezingClock)
        # The clock steps back 3 ms (within the 5 ms tolerance): the generator waits it
        # out with `sleep`, and the process freezes right there for longer than the TTL.
        clock.offset_ms -= 3
        clock.freeze_s = 1.8
        issued: list[int] = []
        with contextlib.suppress(errors.Unavailable):
            issued = source.next_ids(100)
        assert clock.froze
        assert issued == [], f"{len(issued)} IDs left after the lease deadline"
        assert source.ready_reason() == sources.LEASE_LOST


async def test_no_batch_is_returned_after_the_deadline_when_frozen_in_the_spin(
    etcd_endpoint: str, tmp_path: Path
) -> None:
    env = Env(etcd_endpoint, tmp_path, worker_bits=5, ttl=2)
    env.clock = FreezingClock()
    await env.apply()
    async with env.holder("frozen") as source:
        await eventually_async(lambda: serving(source), timeout=5, what="the holder to serve")
        clock = env.clock
        assert isinstance(clock, FreezingClock)
        # A wall clock stuck in one millisecond makes the generator sleep to reach the
        # next one once the sequence is used up; the freeze happens in that sleep, and
        # the batch ends in the millisecond after it.
        clock.stuck_ms = clock.wall_ms() + 1
        clock.freeze_s = 1.8
        issued: list[int] = []
        with contextlib.suppress(errors.Unavailable):
            issued = source.next_ids(5000)
        assert clock.froze
        assert issued == [], f"{len(issued)} IDs left after the lease deadline"


class DelayingClient(etcd.EtcdClient):
    """An etcd client whose next mark write times out on the client but reaches etcd late."""

    def __init__(self, settings: etcd.EtcdSettings) -> None:
        super().__init__(settings)
        self.delay_next_mark: float = 0.0
        self.late: list[asyncio.Task[etcd.TxnResult]] = []
        self.clock_key = ""

    async def txn(
        self,
        compare: Sequence[etcd.Compare],
        success: Sequence[etcd.Op],
        failure: Sequence[etcd.Op] = (),
        *,
        call_timeout: float | None = None,
    ) -> etcd.TxnResult:
        writes_mark = any(isinstance(op, etcd.Put) and op.key == self.clock_key for op in success)
        if writes_mark and self.delay_next_mark:
            delay, self.delay_next_mark = self.delay_next_mark, 0.0

            async def late() -> etcd.TxnResult:
                await asyncio.sleep(delay)
                return await super(DelayingClient, self).txn(compare, success, failure)

            self.late.append(asyncio.create_task(late()))
            raise errors.CoordinationError("etcd unreachable: timed out")
        return await super().txn(compare, success, failure, call_timeout=call_timeout)


async def test_a_late_mark_write_never_lowers_the_stored_mark(
    etcd_endpoint: str, tmp_path: Path
) -> None:
    env = Env(etcd_endpoint, tmp_path, worker_bits=5, ttl=2)
    pool = await env.apply()
    client = DelayingClient(etcd.EtcdSettings(endpoints=(etcd_endpoint,), timeout=2.0))
    client.clock_key = env.keys.clock(1, 0)
    source = sources.LeasedSnowflake(
        layout=pool.layout,
        pool_ref=pool.ref,
        datacenter_name="dc-a",
        datacenter_id=1,
        clock=env.clock,
        metrics=sources.WorkerMetrics(prometheus_client.CollectorRegistry()),
    )
    async with (
        client,
        poolwatch.watching(client, env.keys, pool, datacenter_id=1, clock=env.clock) as watch,
    ):
        holder = worker.WorkerHolder(
            client,
            env.keys,
            pool,
            datacenter_id=1,
            source=source,
            identity=claims.ClaimRecord(None, None, None, "host", os.getpid(), 0, 0),
            clock=env.clock,
            rng=random.Random(1),
            watch=watch,
        )
        task = asyncio.create_task(holder.run())
        try:
            await eventually_async(lambda: serving(source), timeout=5, what="the holder to serve")
            # The next tick's mark write times out on the client; etcd applies it 1.5 s
            # later, after the following ticks wrote higher marks.
            start = (await client.range(env.keys.clock(1, 0))).revision + 1
            client.delay_next_mark = 1.5
            await eventually_async(
                lambda: bool(client.late), timeout=3, what="a delayed mark write"
            )
            await asyncio.gather(*client.late, return_exceptions=True)

            async def mark_revision() -> int:
                return (await client.range(env.keys.clock(1, 0))).kvs[0].mod_revision

            after_late = await mark_revision()

            async def ticked() -> bool:
                return await mark_revision() > after_late

            await eventually_async(ticked, 5, what="one more tick after the late write")
            seen: list[int] = []
            # Every value the key took, in order, from etcd's history.
            end = (await client.range(env.keys.clock(1, 0))).revision
            async with env.client() as reader:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        async for event in reader.watch(env.keys.clock(1, 0), start_revision=start):
                            seen.append(claims.HighWaterMark.from_json(event.kv.value).ms)
                            if event.kv.mod_revision >= end:
                                break
            assert len(seen) >= 3
            drops = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
            assert drops == [], f"the stored mark went down: {drops[:3]}"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await holder.release()


def test_a_new_holder_waits_past_its_own_last_timestamp_when_the_mark_is_lower() -> None:
    # The mark was lost (or lowered) but this process itself issued up to 5000 ms.
    assert claims.floor_for_new_holder(None, previous_lease=7, previous_last_ms=5000) == 5000
    lower = claims.HighWaterMark(ms=4000, lease=9)
    assert claims.floor_for_new_holder(lower, previous_lease=7, previous_last_ms=5000) == 5000
    # Our own mark, and our own last ID below it: the shortcut to our last ID stays.
    own = claims.HighWaterMark(ms=9000, lease=7)
    assert claims.floor_for_new_holder(own, previous_lease=7, previous_last_ms=5000) == 5000
    other = claims.HighWaterMark(ms=9000, lease=8)
    assert claims.floor_for_new_holder(other, previous_lease=7, previous_last_ms=5000) == 9000
