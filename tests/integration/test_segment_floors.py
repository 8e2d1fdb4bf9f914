"""Segment floors in etcd against a real etcd: read, raise, never lower, concurrent raises."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from nebula_id import errors
from nebula_id.core.keys import PoolKeys
from nebula_id.etcd import client as etcd
from nebula_id.etcd.floors import raise_floor, read_floor


@pytest.fixture
async def client(etcd_endpoint: str) -> AsyncIterator[etcd.EtcdClient]:
    async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(etcd_endpoint,))) as c:
        yield c


@pytest.fixture
def keys() -> PoolKeys:
    return PoolKeys("floors", "p", prefix=f"/test-floors/{uuid.uuid4()}")


def test_floor_keys() -> None:
    keys = PoolKeys("ns", "pool", prefix="/x")
    assert keys.floors_prefix == "/x/pools/ns/pool/floors/"
    assert keys.floor(2, "orders") == "/x/pools/ns/pool/floors/2/orders"


async def test_raise_floor_is_monotonic(client: etcd.EtcdClient, keys: PoolKeys) -> None:
    assert await read_floor(client, keys, 0, "orders") is None
    assert await raise_floor(client, keys, 0, "orders", 1000) == 1000
    assert await read_floor(client, keys, 0, "orders") == 1000
    assert await raise_floor(client, keys, 0, "orders", 500) == 1000
    assert await read_floor(client, keys, 0, "orders") == 1000
    assert await raise_floor(client, keys, 0, "orders", 3000) == 3000
    stored = await client.get(keys.floor(0, "orders"))
    assert stored is not None
    assert stored.value == b'{"maxId":3000}'
    # Other tags and datacenters are separate floors.
    assert await read_floor(client, keys, 1, "orders") is None
    assert await read_floor(client, keys, 0, "users") is None


async def test_concurrent_raises_keep_the_highest(client: etcd.EtcdClient, keys: PoolKeys) -> None:
    values = list(range(1, 41))
    results = await asyncio.gather(*(raise_floor(client, keys, 3, "t", v) for v in values))
    assert all(r >= v for r, v in zip(results, values, strict=True))
    assert await read_floor(client, keys, 3, "t") == 40


async def test_a_malformed_floor_is_an_error(client: etcd.EtcdClient, keys: PoolKeys) -> None:
    await client.put(keys.floor(0, "bad"), b"not json")
    with pytest.raises(errors.CoordinationError):
        await read_floor(client, keys, 0, "bad")
    with pytest.raises(errors.CoordinationError):
        await raise_floor(client, keys, 0, "bad", 5)
