"""Failover by the health the operator publishes in etcd (real etcd, two real PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from nebula_id import errors
from nebula_id.clock import SystemClock
from nebula_id.config import database as database_config
from nebula_id.core import failover, keys, poolspec
from nebula_id.etcd import client as etcd_client
from nebula_id.etcd import pools as pool_store
from nebula_id.storage import postgres as pg_store
from nebula_id.storage import postgres_source
from tests.support import sidecar as sidecars
from tests.support.services import PostgresCluster
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration


def rfc3339(delta_s: float = 0.0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delta_s)
    return moment.isoformat().replace("+00:00", "Z")


def health_doc(*, a_healthy: bool, age_s: float = 0.0) -> bytes:
    stamp = rfc3339(-age_s)
    return json.dumps(
        {
            "datacenters": {
                "dc-a": {
                    "healthy": a_healthy,
                    "reason": "" if a_healthy else "probe failed",
                    "checkedAt": stamp,
                },
                "dc-b": {"healthy": True, "reason": "", "checkedAt": stamp},
            },
            "updatedAt": stamp,
        }
    ).encode()


SPEC = {
    "algorithm": "segment",
    "datacenters": [{"name": "dc-a", "id": 1}, {"name": "dc-b", "id": 2}],
    "segment": {"tags": [{"name": "orders", "step": 20, "maxStep": 20}]},
}


@contextlib.asynccontextmanager
async def open_source(
    name: str, etcd_endpoint: str, dcs: dict[str, PostgresCluster], *, provision: bool = True
) -> AsyncIterator[postgres_source.ClusterSegments]:
    pool = poolspec.parse_spec(SPEC, namespace="it", name=name)
    if provision:
        # Cluster mode: the pool exists in etcd and its rows are provisioned, as the
        # operator (or `nebula-id pool apply`) does.
        reach = etcd_client.EtcdSettings(endpoints=(etcd_endpoint,))
        async with etcd_client.EtcdClient(reach) as etcd:
            pool = (await pool_store.apply(etcd, keys.PoolKeys("it", name), SPEC)).config
        for dc in pool.datacenters:
            await pg_store.provision(dcs[dc.name].dsn(), pool, dc)
    settings = sidecars.cluster_settings(
        etcd_endpoint,
        pool=f"it/{name}",
        datacenter="dc-a",
        database=database_config.DatabaseSettings(
            url=dcs["dc-a"].dsn(), urls={"dc-b": dcs["dc-b"].dsn()}
        ),
    )
    async with sidecars.open_segments(
        settings,
        pool,
        clock=SystemClock(),
        registry=CollectorRegistry(),
        failover_settings=failover.FailoverSettings(hold_down_s=0.5, health_max_age_s=30),
        postgres_settings=pg_store.PostgresSettings(connect_timeout_s=1, command_timeout_s=1),
    ) as source:
        yield source


async def serve_until(source: postgres_source.ClusterSegments, datacenter: str) -> list[int]:
    """Serve IDs until ranges come from `datacenter` (bounded)."""
    served: list[int] = []

    async def there() -> bool:
        served.extend(await source.next_ids("orders", 5))
        return bool(source.info()["tags"]["orders"]["datacenter"] == datacenter)

    await eventually_async(there, 30, what=f"ranges from {datacenter}", interval=0.02)
    return served


async def test_published_health_moves_ranges_and_brings_them_back(
    etcd_endpoint: str, postgres_dcs: dict[str, PostgresCluster]
) -> None:
    key = keys.PoolKeys(namespace="it", name="health-moves").health
    async with etcd_client.EtcdClient(etcd_client.EtcdSettings(endpoints=(etcd_endpoint,))) as etcd:
        await etcd.put(key, health_doc(a_healthy=True))
        async with open_source("health-moves", etcd_endpoint, postgres_dcs) as source:
            served = await serve_until(source, "dc-a")
            await etcd.put(key, health_doc(a_healthy=False))
            served += await serve_until(source, "dc-b")
            state = source.info()["failover"]["datacenters"]["dc-a"]
            assert state["publishedHealthy"] is False
            assert state["publishedReason"] == "probe failed"
            # Both databases were up all along: the switch came from the published health.
            assert state["consecutiveFailures"] == 0
            await etcd.put(key, health_doc(a_healthy=True))
            served += await serve_until(source, "dc-a")
    assert len(set(served)) == len(served)


async def test_stale_health_is_ignored(
    etcd_endpoint: str, postgres_dcs: dict[str, PostgresCluster]
) -> None:
    key = keys.PoolKeys(namespace="it", name="health-stale").health
    async with etcd_client.EtcdClient(etcd_client.EtcdSettings(endpoints=(etcd_endpoint,))) as etcd:
        # An operator that stopped an hour ago must not keep a datacenter out of service.
        await etcd.put(key, health_doc(a_healthy=False, age_s=3600))
        async with open_source("health-stale", etcd_endpoint, postgres_dcs) as source:
            await asyncio.sleep(0.3)
            served = await source.next_ids("orders", 50)
            assert source.info()["tags"]["orders"]["datacenter"] == "dc-a"
            assert source.info()["failover"]["datacenters"]["dc-a"]["publishedHealthy"] is None
    assert len(served) == 50


async def test_etcd_being_unreachable_stops_segments_in_cluster_mode(
    postgres_dcs: dict[str, PostgresCluster],
) -> None:
    # Without etcd neither the pool's config nor the segment floors can be proven, so
    # nothing is served: a database row that went back would repeat IDs unnoticed.
    async with open_source(
        "health-no-etcd", "http://127.0.0.1:9", postgres_dcs, provision=False
    ) as source:
        await asyncio.sleep(0.3)
        with pytest.raises(errors.NotReady, match="segments are not served"):
            await source.next_ids("orders", 50)
        assert source.ready_reason() == "not_ready"


async def test_a_malformed_health_document_is_ignored(
    etcd_endpoint: str, postgres_dcs: dict[str, PostgresCluster]
) -> None:
    key = keys.PoolKeys(namespace="it", name="health-garbage").health
    async with etcd_client.EtcdClient(etcd_client.EtcdSettings(endpoints=(etcd_endpoint,))) as etcd:
        await etcd.put(key, b"{not json")
        async with open_source("health-garbage", etcd_endpoint, postgres_dcs) as source:
            await asyncio.sleep(0.3)
            served = await source.next_ids("orders", 10)
            assert source.info()["tags"]["orders"]["datacenter"] == "dc-a"
            state = source.info()["failover"]["datacenters"]["dc-a"]
            assert state["publishedHealthy"] is None
            assert state["usable"] is True
    assert len(set(served)) == 10
