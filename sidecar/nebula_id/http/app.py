"""The app factory: settings in, a ready-to-run aiohttp application out.

This is the one place where the sidecar is assembled.  Standalone or cluster mode is
decided here once, from `settings.etcd`; routes never know which.  Each
resource lives in one `cleanup_ctx`, opened in this order and closed in reverse
(the probe server of `probes.attach`, when configured, starts before all of them):

1. `_etcd_ctx` (cluster mode): the one `etcd.client.EtcdClient`, at `keys.ETCD`.
2. `_pool_ctx`: the pool config at `keys.POOL`: `etcd.worker.load_pool_config` over
   that client (cluster), or the settings under the data-dir lock (standalone).
3. `_pool_watch_ctx` (cluster mode): the one running `etcd.poolwatch.PoolWatch` of
   the pool's config, at `keys.POOL_WATCH`; the worker, the segments and the failover
   settings all listen to it.
4. `_snowflake_ctx`: `keys.SNOWFLAKE`: `etcd.worker.open_snowflake` (lease, claim and
   marks, over the client and the watch) or `standalone.open_snowflake`.
5. `_segments_ctx`: `keys.SEGMENTS`: `storage.postgres_source.open_segments` (the
   database pools; in cluster mode etcd floors and the health watch over the client,
   gated by the watch), `standalone.open_segments` (SQLite), or none.
6. Optional: the gRPC server (`rpc.server.serving_ctx`, last: it serves from the
   sources above) and the API-key file reload (`reload.watching_ctx`).

A cluster-mode sidecar thus holds one etcd client and one watch of its pool's config
(plus the health watch of its segments); no adapter opens a connection of its own.
Middlewares are installed only when auth, a rate limit or the audit log is
configured (and then with the error mapper in front of them); the default
sidecar has none and pays nothing per request for them.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry

from nebula_id import errors, sources
from nebula_id.clock import Clock, SystemClock
from nebula_id.config import http as http_config
from nebula_id.config import serve
from nebula_id.core import pool as pools
from nebula_id.core.jsontypes import JsonObject
from nebula_id.http import errors as http_errors
from nebula_id.http import guards, keys, latency, metrics, openapi, probes, reload, routes
from nebula_id.http import stats as stats_mod

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def build_app(
    settings: serve.ServeSettings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The sidecar app; resources open when it starts (runner setup or `aiohttp_client`)."""
    clock = clock or SystemClock()
    registry = registry if registry is not None else CollectorRegistry()
    stats = stats_mod.RequestStats()
    collector = metrics.StatsCollector(stats)
    registry.register(collector)
    request_latency = latency.RequestLatency()
    registry.register(latency.LatencyCollector(request_latency))

    guard_middlewares: list[Middleware] = []
    auth = settings.auth
    api_keys = guards.load_api_keys(auth)
    key_check = guards.KeyCheck(api_keys) if api_keys else None
    rate_limit: guards.RateLimit | None = None
    if auth.rate_limit_rps is not None:
        burst = auth.rate_limit_burst or max(1, int(auth.rate_limit_rps))
        rate_limit = guards.RateLimit(rate=auth.rate_limit_rps, burst=burst, clock=clock)
    if key_check is not None or rate_limit is not None:
        guard_middlewares.append(
            guards.guard_middleware(key_check=key_check, rate_limit=rate_limit)
        )
    audit_logger = (
        guards.open_audit_log(auth.audit_log, log_format=settings.log.format, pool=settings.pool)
        if auth.audit_log
        else None
    )
    # No middleware at all unless one is configured: handlers are guarded instead.
    middlewares: list[Middleware] = []
    if guard_middlewares or audit_logger is not None:
        if audit_logger is not None:
            middlewares.append(guards.audit_middleware(audit_logger))
        middlewares += [http_errors.error_middleware, *guard_middlewares]

    app = web.Application(middlewares=middlewares)
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock
    app[keys.REGISTRY] = registry
    app[keys.STATS] = stats
    metrics_handler = metrics.metrics_handler(registry)
    with_keys = key_check is not None

    async def openapi_document(request: web.Request) -> web.Response:
        pool = request.app[keys.POOL]
        doc = openapi.document(
            max_batch_size=pool.sidecar.max_batch_size,
            api_keys=with_keys,
            largest_id=pool.layout.largest_parsable_id,
        )
        return web.json_response(doc, headers={"Server": stats_mod.SERVER})

    routes.add_routes(
        app.router,
        guard=not middlewares,
        extra=(("/metrics", metrics_handler), (openapi.PATH, openapi_document)),
        timed=request_latency.timed,
    )
    probes.attach(app, settings.http, metrics=metrics_handler)

    if settings.cluster_mode:
        app.cleanup_ctx.append(_etcd_ctx)
    app.cleanup_ctx.append(_pool_ctx)
    if settings.cluster_mode:
        app.cleanup_ctx.append(_pool_watch_ctx)
    app.cleanup_ctx.append(_snowflake_ctx(collector))
    app.cleanup_ctx.append(_segments_ctx(collector))
    if settings.http.grpc_port is not None:
        # Last: it serves from the sources the contexts above opened.
        from nebula_id.rpc import server as grpc_server

        app.cleanup_ctx.append(grpc_server.serving_ctx(key_check=key_check, rate_limit=rate_limit))
    if key_check is not None and auth.api_keys_file:
        app.cleanup_ctx.append(reload.watching_ctx([reload.api_keys(auth, key_check)]))
    if audit_logger is not None:
        logger = audit_logger

        async def close_audit(app: web.Application) -> None:
            guards.close_audit_log(logger)

        app.on_cleanup.append(close_audit)
    return app


def ssl_context(settings: http_config.HttpSettings) -> ssl.SSLContext | None:
    """The server's TLS context when a certificate is configured."""
    if not settings.tls_cert_file or not settings.tls_key_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as e:
        raise errors.ConfigError(
            f"tls_cert_file {settings.tls_cert_file} / tls_key_file {settings.tls_key_file} "
            f"cannot be loaded: {e}"
        ) from e
    return context


# --- resources, one cleanup_ctx each ---------------------------------------------------


async def _etcd_ctx(app: web.Application) -> AsyncIterator[None]:
    from nebula_id.etcd import client as etcd

    settings = app[keys.SETTINGS].etcd
    assert settings is not None  # added in cluster mode only
    async with etcd.EtcdClient(settings) as client:
        app[keys.ETCD] = client
        yield


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    if settings.etcd is not None:
        from nebula_id.etcd import worker

        app[keys.POOL] = await worker.load_pool_config(
            settings.pool_keys(),
            client=app[keys.ETCD],
            data_dir=settings.data_dir,
            clock=app[keys.CLOCK],
        )
        yield
        return
    from nebula_id import standalone

    with standalone.locked_data_dir(settings.data_dir):
        app[keys.POOL] = settings.standalone_pool()
        yield


async def _pool_watch_ctx(app: web.Application) -> AsyncIterator[None]:
    from nebula_id.etcd import poolwatch

    settings, pool = app[keys.SETTINGS], app[keys.POOL]
    async with poolwatch.watching(
        app[keys.ETCD],
        settings.pool_keys(),
        pool,
        datacenter_id=pool.datacenter(settings.datacenter).id,
        clock=app[keys.CLOCK],
    ) as watch:
        app[keys.POOL_WATCH] = watch
        yield


def _snowflake_ctx(collector: metrics.StatsCollector) -> CleanupContext:
    async def snowflake_ctx(app: web.Application) -> AsyncIterator[None]:
        settings, pool = app[keys.SETTINGS], app[keys.POOL]
        clock, registry = app[keys.CLOCK], app[keys.REGISTRY]
        opener: contextlib.AbstractAsyncContextManager[sources.SnowflakeSource]
        if settings.etcd is not None:
            from nebula_id.etcd import worker

            opener = worker.open_snowflake(
                settings.pool_keys(),
                pool,
                datacenter=settings.datacenter,
                pod=settings.pod,
                client=app[keys.ETCD],
                watch=app[keys.POOL_WATCH],
                clock=clock,
                registry=registry,
            )
        else:
            from nebula_id import standalone

            opener = standalone.open_snowflake(
                settings.data_dir,
                pool,
                datacenter=settings.datacenter,
                worker_id=settings.snowflake.worker_id,
                clock=clock,
                registry=registry,
            )
        async with opener as source:
            app[keys.SNOWFLAKE] = source
            collector.snowflake = source
            yield
            collector.snowflake = None

    return snowflake_ctx


def _segments_ctx(collector: metrics.StatsCollector) -> CleanupContext:
    async def segments_ctx(app: web.Application) -> AsyncIterator[None]:
        settings, pool = app[keys.SETTINGS], app[keys.POOL]
        clock, registry = app[keys.CLOCK], app[keys.REGISTRY]
        opener: contextlib.AbstractAsyncContextManager[sources.SegmentSource]
        if settings.database.configured:
            from nebula_id.storage import postgres_source

            cluster = settings.etcd is not None
            opener = postgres_source.open_segments(
                settings.database,
                pool,
                datacenter=settings.datacenter,
                overrides=settings.failover,
                keys=settings.pool_keys() if cluster else None,
                clock=clock,
                registry=registry,
                client=app[keys.ETCD] if cluster else None,
                watch=app[keys.POOL_WATCH] if cluster else None,
            )
        elif settings.cluster_mode:
            opener = _no_segments(pool)
        else:
            from nebula_id import standalone

            opener = standalone.open_segments(
                settings.data_dir,
                pool,
                datacenter=settings.datacenter,
                clock=clock,
                registry=registry,
            )
        async with opener as source:
            app[keys.SEGMENTS] = source
            collector.segments = source
            yield
            collector.segments = None

    return segments_ctx


class SegmentsNotConfigured:
    """Cluster mode without a database: SQLite per sidecar would repeat IDs across
    sidecars, so segment requests fail closed instead."""

    def __init__(self, pool: pools.PoolConfig) -> None:
        self._tags = [t.name for t in pool.tags]

    def tags(self) -> list[str]:
        return list(self._tags)

    def take_one(self, tag: str) -> int | None:
        if tag not in self._tags:
            raise errors.UnknownTag(tag, self._tags)
        return None  # next_ids says why

    async def next_ids(self, tag: str, count: int) -> list[int]:
        if tag not in self._tags:
            raise errors.UnknownTag(tag, self._tags)
        raise errors.NotReady(
            "segments need a database in cluster mode: set NEBULA_DATABASE_URL "
            "(or NEBULA_DATABASE_URLS)"
        )

    def ready_reason(self) -> str | None:
        return "not_ready"

    def info(self) -> JsonObject:
        return {"store": None, "message": "no database configured"}


@contextlib.asynccontextmanager
async def _no_segments(pool: pools.PoolConfig) -> AsyncIterator[SegmentsNotConfigured]:
    yield SegmentsNotConfigured(pool)
