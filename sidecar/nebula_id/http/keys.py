"""Typed application keys: the app's state, set once at start-up.

Cluster-mode adapters (etcd, PostgreSQL) and tests reach the app's resources
through these keys only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from nebula_id import sources
from nebula_id.clock import Clock
from nebula_id.config import serve
from nebula_id.core import pool as pools
from nebula_id.http import stats as stats_mod

if TYPE_CHECKING:  # cluster mode only: a standalone sidecar never imports the etcd adapters
    from nebula_id.etcd import client as etcd
    from nebula_id.etcd import poolwatch

SETTINGS = web.AppKey("settings", serve.ServeSettings)
CLOCK = web.AppKey("clock", Clock)
REGISTRY = web.AppKey("registry", CollectorRegistry)
POOL = web.AppKey("pool", pools.PoolConfig)
ETCD: web.AppKey[etcd.EtcdClient] = web.AppKey("etcd")
"""The sidecar's one etcd client (cluster mode only), shared by every adapter."""
POOL_WATCH: web.AppKey[poolwatch.PoolWatch] = web.AppKey("pool_watch")
"""The sidecar's one running watch of its pool's config (cluster mode only)."""
SNOWFLAKE = web.AppKey("snowflake", sources.SnowflakeSource)
SEGMENTS = web.AppKey("segments", sources.SegmentSource)
STATS = web.AppKey("stats", stats_mod.RequestStats)
GRPC_PORT = web.AppKey("grpc_port", int)
"""The port the gRPC server bound (set only when `grpc_port` is configured)."""
