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

TTL = 2


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
    started = time.monotonic()
    a_gave_up_at = None
    while time.monotonic() - started < TTL + 3:
        if a_gave_up_at is None and not a.holds():
            a_gave_up_at = time.monotonic()
        if await b.try_acquire():
            break
        await asyncio.sleep(0.05)
    b_led_at = time.monotonic()
    assert b.holds()
    assert a_gave_up_at is not None
    assert a_gave_up_at < b_led_at
    print(f"\nold leader stopped {b_led_at - a_gave_up_at:.2f} s before the new one could lead")
    await b.resign()


async def test_holding_renews_and_losing_etcd_ends_leadership_in_time(
    etcd_factory: Callable[[], EtcdServer],
) -> None:
    server = etcd_factory()
    settings = etcd.EtcdSettings(endpoints=(server.endpoint,), timeout=1.0)
    async with etcd.EtcdClient(settings) as private:
        a = election(private, "a", "/leader-test-c/operator/leader")
        assert await a.try_acquire()
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(TTL * 2)  # several renewals: still the leader
        assert a.holds()
        assert not holding.done()
        await asyncio.to_thread(server.stop)
        stopped = time.monotonic()
        with pytest.raises(leader.LeadershipLost):
            await asyncio.wait_for(holding, timeout=TTL + 2)
        assert time.monotonic() - stopped <= TTL
        assert not a.holds()
        assert not a.state.alive
