"""The sidecar's adapters, opened from one `ServeSettings` the way the app factory does.

Integration tests drive the adapters without the HTTP app.  These helpers hand each
adapter only its own concern's settings, as `nebula_id.http.app` does, and open a
cluster-mode sidecar's etcd resources the same way: one etcd client and one running
watch of the pool's config (`etcd_resources`), which the adapters then share.
`open_snowflake`, `open_segments` and `load_pool_config` give one adapter resources
of its own when none are passed, as a sidecar that runs only that adapter would hold
them (each holder its own client, like separate sidecars).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import random
from collections.abc import AsyncIterator
from typing import Any

import prometheus_client

from nebula_id.clock import Clock
from nebula_id.config import etcd as etcd_config
from nebula_id.config import pod as pod_config
from nebula_id.config import serve
from nebula_id.core import pool as pools
from nebula_id.etcd import client as etcd
from nebula_id.etcd import poolwatch, worker
from nebula_id.etcd import source as sources
from nebula_id.storage import postgres_source


def cluster_settings(
    endpoint: str,
    *,
    pool: str,
    prefix: str = "/nebula-id",
    datacenter: str | None = None,
    data_dir: pathlib.Path | None = None,
    pod: str | None = None,
    **extra: Any,
) -> serve.ServeSettings:
    """A cluster-mode sidecar's settings (etcd at `endpoint`, the downward API for `pod`)."""
    return serve.ServeSettings(
        pool=pool,
        etcd=etcd_config.EtcdSettings(endpoints=(endpoint,), prefix=prefix),
        datacenter=datacenter,
        pod=pod_config.PodSettings(
            name=pod, uid=f"uid-{pod}" if pod else None, node_name="node-test"
        ),
        **({"data_dir": data_dir} if data_dir is not None else {}),
        **extra,
    )


@dataclasses.dataclass(frozen=True)
class EtcdResources:
    client: etcd.EtcdClient
    watch: poolwatch.PoolWatch


def _etcd(settings: serve.ServeSettings) -> etcd.EtcdSettings:
    assert settings.etcd is not None, "a cluster-mode sidecar's settings"
    return settings.etcd


@contextlib.asynccontextmanager
async def etcd_resources(
    settings: serve.ServeSettings,
    pool: pools.PoolConfig,
    *,
    clock: Clock,
    client: etcd.EtcdClient | None = None,
) -> AsyncIterator[EtcdResources]:
    """The sidecar's client (or `client`, which the caller closes) and its pool watch."""
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = etcd.EtcdClient(_etcd(settings))
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


async def load_pool_config(settings: serve.ServeSettings, *, clock: Clock) -> pools.PoolConfig:
    """`worker.load_pool_config` over a client of its own."""
    async with etcd.EtcdClient(_etcd(settings)) as client:
        return await worker.load_pool_config(
            settings.pool_keys(), client=client, data_dir=settings.data_dir, clock=clock
        )


@contextlib.asynccontextmanager
async def open_snowflake(
    settings: serve.ServeSettings,
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
            settings.pool_keys(),
            pool,
            datacenter=settings.datacenter,
            pod=settings.pod,
            client=resources.client,
            watch=resources.watch,
            clock=clock,
            registry=registry,
            rng=rng,
        ) as source,
    ):
        yield source


@contextlib.asynccontextmanager
async def open_segments(
    settings: serve.ServeSettings,
    pool: pools.PoolConfig,
    *,
    clock: Clock,
    client: etcd.EtcdClient | None = None,
    watch: poolwatch.PoolWatch | None = None,
    **kwargs: Any,
) -> AsyncIterator[postgres_source.ClusterSegments]:
    """`postgres_source.open_segments`; in cluster mode over the given client and watch,
    or an etcd client and pool watch of its own."""
    in_cluster = settings.etcd is not None and settings.pool is not None
    async with contextlib.AsyncExitStack() as stack:
        if in_cluster and (client is None or watch is None):
            resources = await stack.enter_async_context(
                etcd_resources(settings, pool, clock=clock, client=client)
            )
            client, watch = resources.client, resources.watch
        source = await stack.enter_async_context(
            postgres_source.open_segments(
                settings.database,
                pool,
                datacenter=settings.datacenter,
                overrides=settings.failover,
                keys=settings.pool_keys() if in_cluster else None,
                clock=clock,
                client=client if in_cluster else None,
                watch=watch if in_cluster else None,
                **kwargs,
            )
        )
        yield source
