"""Leader election on real etcd: one leader, hand-over on resign, and the old leader's
local deadline always passes before etcd lets a standby in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from nebula_id.clock import SystemClock
from nebula_id.etcd import client as etcd
from nebula_id_operator import leader
from tests.support.etcd import EtcdServer
from tests.support.waiting import eventually_async

TTL = 2


class CountingClient(etcd.EtcdClient):
    """An etcd client that counts the lease renewals etcd acknowledged."""

    renewals = 0

    async def keepalive(self, lease: int, *, call_timeout: float | None = None) -> int:
        ttl = await super().keepalive(lease, call_timeout=call_timeout)
        self.renewals += 1
        return ttl


@pytest.fixture
async def client(etcd_endpoint: str) -> AsyncIterator[etcd.EtcdClient]:
    async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(etcd_endpoint,))) as c:
        yield c


def election(client: etcd.EtcdClient, identity: str, key: str) -> leader.LeaderElection:
    return leader.LeaderElection(
        client, key=key, identity=identity, ttl_seconds=TTL, clock=SystemClock()
    )


async def test_one_leader_and_hand_over_on_resign(client: etcd.EtcdClient) -> None:
    key = "/leader-test-a/operator/leader"
    a, b = election(client, "a", key), election(client, "b", key)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    assert b.state.leader == "a"
    assert a.holds()
    assert not b.holds()
    await a.resign()
    assert not a.holds()
    assert await b.try_acquire()
    assert (await client.get(key)).value == b"b"  # type: ignore[union-attr]
    await b.resign()


async def test_the_old_leader_gives_up_before_anyone_else_can_lead(
    client: etcd.EtcdClient,
) -> None:
    """A leader that stops renewing (frozen, partitioned) must stop trusting itself first."""
    key = "/leader-test-b/operator/leader"
    a, b = election(client, "a", key), election(client, "b", key)
    assert await a.try_acquire()
    a_gave_up_at: list[float] = []

    async def b_leads() -> bool:
        # a is asked first: when b wins in this round, a must have given up already.
        if not a_gave_up_at and not a.holds():
            a_gave_up_at.append(time.monotonic())
        return await b.try_acquire()

    # a never renews: etcd frees the key about TTL after the grant.  The ceiling
    # leaves room for a loaded machine; an election that never hands over fails.
    led: bool = await eventually_async(b_leads, TTL * 10, what="b to lead after a stopped renewing")
    assert led
    b_led_at = time.monotonic()
    assert b.holds()
    assert a_gave_up_at, "b led while a still trusted its lease"
    assert a_gave_up_at[0] < b_led_at
    print(f"\nold leader stopped {b_led_at - a_gave_up_at[0]:.2f} s before the new one could lead")
    await b.resign()


async def test_holding_renews_and_losing_etcd_ends_leadership_in_time(
    etcd_factory: Callable[[], EtcdServer],
) -> None:
    server = etcd_factory()
    settings = etcd.EtcdSettings(endpoints=(server.endpoint,), timeout=1.0)
    private = CountingClient(settings)
    async with private:
        key = "/leader-test-c/operator/leader"
        a = election(private, "a", key)
        assert await a.try_acquire()
        holding = asyncio.create_task(a.hold())
        # Renewals come every TTL/3: three of them outlast the lease as granted, so
        # the key still being there means etcd took them.
        await eventually_async(
            lambda: private.renewals >= 3, TTL * 10, what="three acknowledged renewals"
        )
        assert a.holds()
        assert not holding.done()
        kv = await private.get(key)
        assert kv is not None
        assert kv.value == b"a"
        await asyncio.to_thread(server.stop)
        stopped = time.monotonic()
        with pytest.raises(leader.LeadershipLost):
            await asyncio.wait_for(holding, timeout=TTL * 10)
        took = time.monotonic() - stopped
        print(f"\nleadership ended {took:.2f} s after etcd stopped (lease TTL {TTL} s)")
        # By design at most TTL (the deadline counts from the last acknowledged
        # renewal); twice that leaves room for a loaded machine and still fails
        # a leader that keeps trusting a lease it cannot renew.
        assert took <= TTL * 2
        assert not a.holds()
        assert not a.state.alive
