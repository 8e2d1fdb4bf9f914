"""The leased worker ID against a real etcd, in process: claim, release, exhaust, fence, re-claim.

Every holder here has its own etcd client, exactly as separate sidecars would; the
subprocess tests (`test_worker_sidecars.py`) repeat the headline cases with real
`nebula-id serve` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import prometheus_client
import pytest

from nebula_id import clock as clocks
from nebula_id import errors
from nebula_id.config import serve as settings_mod
from nebula_id.core import keys as pool_keys
from nebula_id.core import lease as leases
from nebula_id.core import pool as pools
from nebula_id.etcd import claims
from nebula_id.etcd import client as etcd
from nebula_id.etcd import pools as pool_store
from nebula_id.etcd import source as sources
from tests.support import sidecar as sidecars
from tests.support.clocks import SteppedClock
from tests.support.fixtures import EtcdFactory
from tests.support.waiting import eventually_async


class SkewClock:
    """The real clocks, with a wall clock the test can move back and forth."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Env:
    """A pool under a private key prefix, and a way to open holders of it."""

    def __init__(
        self,
        endpoint: str,
        tmp_path: Path,
        *,
        worker_bits: int,
        ttl: int,
        clock: clocks.Clock | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.prefix = f"/test-worker/{uuid.uuid4()}"
        self.keys = pool_keys.PoolKeys("ns", "pool", prefix=self.prefix)
        self.tmp_path = tmp_path
        self.spec = {
            "snowflake": {
                "workerBits": worker_bits,
                "datacenterBits": 5,
                "timestampBits": 41 + 5 - worker_bits,
            },
            "datacenters": [{"name": "dc-a", "id": 1}],
            "lease": {"ttlSeconds": ttl},
        }
        self.skew = SkewClock()
        self.clock: clocks.Clock = clock or self.skew
        self.pool: pools.PoolConfig | None = None

    def client(self) -> etcd.EtcdClient:
        return etcd.EtcdClient(etcd.EtcdSettings(endpoints=(self.endpoint,), timeout=2.0))

    async def apply(self) -> pools.PoolConfig:
        async with self.client() as c:
            result = await pool_store.apply(c, self.keys, self.spec)
        self.pool = result.config
        return result.config

    def settings(self, pod: str) -> settings_mod.ServeSettings:
        return sidecars.cluster_settings(
            self.endpoint,
            pool="ns/pool",
            prefix=self.prefix,
            datacenter="dc-a",
            data_dir=self.tmp_path / pod,
            pod=pod,
        )

    @contextlib.asynccontextmanager
    async def holder(
        self, pod: str, registry: prometheus_client.CollectorRegistry | None = None
    ) -> AsyncIterator[sources.LeasedSnowflake]:
        assert self.pool is not None
        async with sidecars.open_snowflake(
            self.settings(pod), self.pool, clock=self.clock, registry=registry
        ) as source:
            yield source

    async def claims(self) -> dict[int, dict[str, object]]:
        async with self.client() as c:
            found = await c.range(self.keys.workers_of(1), prefix=True)
        return {
            int(kv.key.rsplit("/", 1)[1]): json.loads(kv.value) | {"_lease": kv.lease}
            for kv in found.kvs
        }

    async def mark(self, worker_id: int) -> claims.HighWaterMark | None:
        async with self.client() as c:
            kv = await c.get(self.keys.clock(1, worker_id))
        return claims.HighWaterMark.from_json(kv.value) if kv else None


def serving(source: sources.LeasedSnowflake) -> bool:
    return source.ready_reason() is None


def worker_of(source: sources.LeasedSnowflake) -> int:
    generator = source.generator
    assert generator is not None
    return generator.worker


@pytest.fixture
async def env(etcd_endpoint: str, tmp_path: Path) -> Env:
    e = Env(etcd_endpoint, tmp_path, worker_bits=5, ttl=2)
    await e.apply()
    return e


async def test_twenty_holders_starting_at_once_get_twenty_distinct_ids(env: Env) -> None:
    async with contextlib.AsyncExitStack() as stack:
        holders = await asyncio.gather(
            *(stack.enter_async_context(env.holder(f"pod-{i}")) for i in range(20))
        )
        for h in holders:
            await eventually_async(lambda h=h: serving(h), timeout=10, what="every holder to serve")
        workers = sorted(worker_of(h) for h in holders)
        # Distinct; under contention a loser may take a slightly higher free ID.
        assert len(set(workers)) == 20
        assert workers[-1] < 32

        stored = await env.claims()
        assert sorted(stored) == workers
        assert len({c["_lease"] for c in stored.values()}) == 20
        assert {c["pod"] for c in stored.values()} == {f"pod-{i}" for i in range(20)}
        assert all(c["host"] == "node-test" for c in stored.values())

        ids = [i for h in holders for i in h.next_ids(500)]
        assert len(set(ids)) == len(ids) == 20 * 500
        for h in holders:
            parsed = h.layout.parse(h.next_id())
            assert (parsed.datacenter, parsed.worker) == (1, worker_of(h))
            mark = await env.mark(worker_of(h))
            assert mark is not None
            assert mark.ms >= parsed.timestamp_ms
    assert await env.claims() == {}


async def test_release_lowers_the_mark_to_the_last_id_and_frees_the_id_at_once(env: Env) -> None:
    async with env.holder("first") as first:
        await eventually_async(lambda: serving(first), timeout=5, what="the first holder")
        last = first.layout.parse(first.next_ids(10)[-1]).timestamp_ms
        mark_while_held = await env.mark(0)
        assert mark_while_held is not None
        assert mark_while_held.ms > env.clock.wall_ms()  # runs ahead of the clock
    released = await env.mark(0)
    assert released is not None
    assert released.ms == last
    assert await env.claims() == {}

    registry = prometheus_client.CollectorRegistry()
    async with env.holder("second", registry) as second:
        await eventually_async(lambda: serving(second), timeout=5, what="the second holder")
        assert worker_of(second) == 0
        assert second.layout.parse(second.next_id()).timestamp_ms > last
    # It waited (if at all) only past the last ID really issued, not the mark's horizon.
    waited = registry.get_sample_value("nebula_id_snowflake_mark_wait_seconds_total")
    assert waited is not None
    assert waited < 0.5


async def test_exhausted_worker_space_is_reported_and_a_freed_id_is_taken(
    etcd_endpoint: str, tmp_path: Path
) -> None:
    env = Env(etcd_endpoint, tmp_path, worker_bits=2, ttl=2)
    await env.apply()
    registry = prometheus_client.CollectorRegistry()
    stacks = [contextlib.AsyncExitStack() for _ in range(5)]
    try:
        holders = [
            await stack.enter_async_context(env.holder(f"pod-{i}"))
            for i, stack in enumerate(stacks[:4])
        ]
        for h in holders:
            await eventually_async(lambda h=h: serving(h), timeout=5, what="four holders")
        fifth = await stacks[4].enter_async_context(env.holder("pod-5", registry))
        await eventually_async(
            lambda: fifth.ready_reason() == "worker_ids_exhausted", timeout=5, what="exhaustion"
        )
        with pytest.raises(errors.WorkerIdsExhausted, match="all 4 worker IDs are held"):
            fifth.next_id()
        assert registry.get_sample_value("nebula_id_worker_ids_exhausted") == 1
        assert fifth.info()["state"] == "worker_ids_exhausted"

        freed = worker_of(holders[2])
        last_of_freed = holders[2].layout.parse(holders[2].next_id()).timestamp_ms
        await stacks[2].aclose()  # a graceful exit revokes the lease at once
        await eventually_async(
            lambda: serving(fifth), timeout=5, what="the fifth to take the freed ID"
        )
        assert worker_of(fifth) == freed
        assert fifth.layout.parse(fifth.next_id()).timestamp_ms > last_of_freed
        assert registry.get_sample_value("nebula_id_worker_ids_exhausted") == 0
        assert registry.get_sample_value("nebula_id_worker_claims_total") == 1
    finally:
        for stack in stacks:
            await stack.aclose()


async def test_etcd_down_fences_snowflake_at_the_lease_deadline_and_serving_resumes(
    etcd_factory: EtcdFactory, tmp_path: Path
) -> None:
    """On the holder's own (stepped) clock: serving until the deadline, refused after it."""
    server = etcd_factory()
    clock = SteppedClock()
    env = Env(server.endpoint, tmp_path, worker_bits=5, ttl=2, clock=clock)
    await env.apply()
    timing = leases.LeaseTiming(2)
    registry = prometheus_client.CollectorRegistry()
    issued: list[int] = []
    async with env.holder("pod", registry) as source:
        await eventually_async(lambda: serving(source), 5, what="serving")
        # The last keepalive left at this instant: the clock has not moved since.
        deadline = timing.deadline(clock.monotonic())
        issued += source.next_ids(100)

        server.kill()
        clock.advance(deadline - clock.monotonic() - 0.001)
        issued.append(source.next_id())  # the lease is proven up to the deadline
        await eventually_async(lambda: clock.sleeping, 10, what="the failed keepalive tick")
        issued.append(source.next_id())  # a failed keepalive does not shorten it either
        clock.advance(0.002)
        with pytest.raises(errors.LeaseLost):
            source.next_id()
        assert source.ready_reason() == "lease_lost"
        assert registry.get_sample_value("nebula_id_snowflake_fence_refusals_total") == 1

        server.start()

        def tick_until_serving() -> bool:
            if clock.sleeping:
                clock.advance(timing.interval)
            return serving(source)

        await eventually_async(tick_until_serving, 30, what="serving after etcd is back")
        issued += source.next_ids(100)
    assert len(set(issued)) == len(issued)
    assert issued == sorted(issued)


async def test_a_claim_taken_away_is_never_used_again(etcd_endpoint: str, tmp_path: Path) -> None:
    clock = SteppedClock()
    env = Env(etcd_endpoint, tmp_path, worker_bits=5, ttl=2, clock=clock)
    await env.apply()
    registry = prometheus_client.CollectorRegistry()
    async with env.holder("victim", registry) as source:
        await eventually_async(lambda: serving(source), 5, what="serving")
        assert worker_of(source) == 0
        # Someone deletes the claim and another lease takes worker 0.
        async with env.client() as c:
            thief = await c.grant(30)
            key = env.keys.worker(1, 0)
            await c.delete(key)
            await c.put(key, b'{"pod": "thief"}', lease=thief.id)
            # One keepalive tick of the holder's clock is enough to notice.
            await eventually_async(lambda: clock.sleeping, 10, what="the holder between ticks")
            clock.advance(leases.LeaseTiming(2).interval)
            await eventually_async(
                lambda: source.generator is None or worker_of(source) != 0,
                10,
                what="the victim to give up worker 0",
            )
            await eventually_async(lambda: serving(source), 10, what="a new claim")
            assert worker_of(source) == 1
            assert source.layout.parse(source.next_id()).worker == 1
            stored = await env.claims()
            assert json.loads(json.dumps(stored[0]))["pod"] == "thief"
            assert registry.get_sample_value("nebula_id_worker_leases_lost_total") == 1
            await c.revoke(thief.id)


async def test_a_clock_rollback_across_a_restart_never_repeats_an_id(env: Env) -> None:
    issued: list[int] = []
    async with env.holder("before") as before:
        await eventually_async(lambda: serving(before), timeout=5, what="serving")
        issued += before.next_ids(1000)
        # The clock moves back by 3 s while this holder runs: it refuses.
        env.skew.offset_ms = -3000
        with pytest.raises(errors.ClockMovedBackward):
            before.next_id()
        env.skew.offset_ms = 0
        issued += before.next_ids(1000)
    # The restart happens while the clock is 3 s behind.
    env.skew.offset_ms = -3000
    started = time.monotonic()
    async with env.holder("after") as after:
        await eventually_async(lambda: serving(after), timeout=10, what="serving after the mark")
        waited = time.monotonic() - started
        issued += after.next_ids(1000)
    assert worker_of_id(env, issued[-1]) == worker_of_id(env, issued[0])
    assert len(set(issued)) == len(issued)
    assert issued == sorted(issued)
    assert waited >= 2.5  # it waited for its clock to pass the last ID issued before
    print(f"clock 3 s behind at restart: refused for {waited:.2f} s, then served")


def worker_of_id(env: Env, value: int) -> int:
    assert env.pool is not None
    return env.pool.layout.parse(value).worker
