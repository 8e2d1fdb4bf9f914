"""The sidecar's adapters, opened from one `ServeSettings` the way the app factory does.

Integration tests drive the adapters without the HTTP app; these helpers hand each
adapter only its own concern's settings, as `nebula_id.http.app` does.
"""

from __future__ import annotations

import contextlib
import pathlib
from typing import Any

from nebula_id.clock import Clock
from nebula_id.config import etcd as etcd_config
from nebula_id.config import pod as pod_config
from nebula_id.config import serve
from nebula_id.core import pool as pools
from nebula_id.etcd import worker
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


async def load_pool_config(settings: serve.ServeSettings, *, clock: Clock) -> pools.PoolConfig:
    assert settings.etcd is not None
    return await worker.load_pool_config(
        settings.etcd, settings.pool_keys(), data_dir=settings.data_dir, clock=clock
    )


def open_snowflake(
    settings: serve.ServeSettings, pool: pools.PoolConfig, **kwargs: Any
) -> contextlib.AbstractAsyncContextManager[Any]:
    assert settings.etcd is not None
    return worker.open_snowflake(
        settings.etcd,
        settings.pool_keys(),
        pool,
        datacenter=settings.datacenter,
        pod=settings.pod,
        **kwargs,
    )


def open_segments(
    settings: serve.ServeSettings, pool: pools.PoolConfig, **kwargs: Any
) -> contextlib.AbstractAsyncContextManager[postgres_source.ClusterSegments]:
    in_cluster = settings.etcd is not None and settings.pool is not None
    return postgres_source.open_segments(
        settings.database,
        pool,
        datacenter=settings.datacenter,
        overrides=settings.failover,
        etcd=settings.etcd if in_cluster else None,
        keys=settings.pool_keys() if in_cluster else None,
        **kwargs,
    )
