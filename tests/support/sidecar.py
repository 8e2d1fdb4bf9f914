"""A cluster-mode sidecar's etcd resources, for tests that drive its adapters without the app.

`etcd_resources` opens them the way `nebula_id.http.app` does: one etcd client and one
running watch of the pool's config, which the adapters then share.  `open_snowflake`
and `load_pool_config` give one adapter resources of its own, as a sidecar that runs
only that adapter would hold them (each holder its own client, like separate sidecars).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator

import prometheus_client

from nebula_id import settings as settings_mod
from nebula_id.clock import Clock
from nebula_id.core import pool as pools
from nebula_id.etcd import client as etcd
from nebula_id.etcd import poolwatch, worker
from nebula_id.etcd import source as sources


@dataclasses.dataclass(frozen=True)
class EtcdResources:
    client: etcd.EtcdClient
    watch: poolwatch.PoolWatch


@contextlib.asynccontextmanager
async def etcd_resources(
    settings: settings_mod.ServeSettings,
    pool: pools.PoolConfig,
    *,
    clock: Clock,
    client: etcd.EtcdClient | None = None,
) -> AsyncIterator[EtcdResources]:
    """The sidecar's client (or `client`, which the caller closes) and its pool watch."""
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = etcd.EtcdClient(worker.etcd_settings(settings))
            stack.push_async_callback(client.close)
        watch = await stack.enter_async_context(
            poolwatch.watching(
                client,
                settings.pool_keys(),
                pool,
                datacenter_id=pool.datacenter(settings.datacenter).id,
                clock=clock,
            )
        )
        yield EtcdResources(client, watch)


async def load_pool_config(
    settings: settings_mod.ServeSettings, *, clock: Clock
) -> pools.PoolConfig:
    """`worker.load_pool_config` over a client of its own."""
    async with etcd.EtcdClient(worker.etcd_settings(settings)) as client:
        return await worker.load_pool_config(settings, client=client, clock=clock)


@contextlib.asynccontextmanager
async def open_snowflake(
    settings: settings_mod.ServeSettings,
    pool: pools.PoolConfig,
    *,
    clock: Clock,
    registry: prometheus_client.CollectorRegistry | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[sources.LeasedSnowflake]:
    """`worker.open_snowflake` over an etcd client and a pool watch of its own."""
    async with (
        etcd_resources(settings, pool, clock=clock) as resources,
        worker.open_snowflake(
            settings,
            pool,
            client=resources.client,
            watch=resources.watch,
            clock=clock,
            registry=registry,
            rng=rng,
        ) as source,
    ):
        yield source
