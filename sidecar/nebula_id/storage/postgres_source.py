"""The cluster-mode `SegmentSource`: a database per datacenter, with failover.

`open_segments` is what the sidecar's app factory enters when a database URL is
configured.  It builds one store per datacenter that has a DSN (PostgreSQL or
MySQL/MariaDB, as `storage.engines` picks from the DSN's scheme),
wraps them in a `FailoverSegmentStore` (itself a `SegmentStore`, so the double
buffer of `core.segment` never learns about datacenters), follows the health
the operator publishes, probes datacenters it holds as down, and exports
metrics on the registry it is given.

It receives its own concerns only: the database settings (`url` is the own
datacenter's, default the pool's first; `urls` and the files of `url_dir`,
named after datacenters, give the others) and the local failover overrides.  In
cluster mode the app factory also passes the pool's keys, the sidecar's etcd
client (for the floors and the health watch) and its running pool-config watch
(the gate, and the failover settings as the config changes); this module opens
no etcd connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nebula_id import errors
from nebula_id.clock import Clock
from nebula_id.config import database as database_config
from nebula_id.config import failover as failover_config
from nebula_id.core import failover, jsontypes, segment
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.core.jsontypes import JsonObject
from nebula_id.etcd import client as etcd_client
from nebula_id.etcd import pools as pool_store
from nebula_id.etcd import poolwatch
from nebula_id.storage import engines, floored, health, postgres

log = logging.getLogger(__name__)

# Loads may try several datacenters, each within its own connect + command budget.
LOAD_TIMEOUT_S = 20.0


class SegmentMetrics:
    """Counters of the failover store, on an explicitly passed registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.allocations = Counter(
            "nebula_id_segment_allocations",
            "Segment ranges allocated, by datacenter",
            ["datacenter"],
            registry=registry,
        )
        self.allocation_errors = Counter(
            "nebula_id_segment_allocation_errors",
            "Failed segment range allocations, by datacenter",
            ["datacenter"],
            registry=registry,
        )
        self.failovers = Counter(
            "nebula_id_segment_failovers",
            "Changes of the datacenter that segment ranges come from",
            registry=registry,
        )
        self.allocation_seconds = Histogram(
            "nebula_id_segment_allocation_seconds",
            "Time of one range allocation (one UPDATE ... RETURNING)",
            ["datacenter"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )


class FailoverSegmentStore:
    """A `SegmentStore` that asks `core.failover` which datacenter to allocate from."""

    def __init__(
        self,
        stores: Mapping[str, floored.RepairableStore],
        policy: failover.Failover,
        *,
        metrics: SegmentMetrics | None = None,
    ) -> None:
        missing = set(policy.datacenters) - set(stores)
        if missing:
            raise errors.ConfigError(f"no store for datacenters {sorted(missing)}")
        self._stores = dict(stores)
        self._policy = policy
        self._metrics = metrics
        self._switches_seen = policy.switches

    @property
    def policy(self) -> failover.Failover:
        return self._policy

    async def allocate(self, tag: str, step: int) -> segment.SegmentRange:
        problems: list[str] = []
        for name in self._policy.order():
            self._count_switches()
            started = time.perf_counter()
            try:
                allocated = await self._stores[name].allocate(tag, step)
            except errors.StorageError as e:
                self._policy.record_failure(name)
                if self._metrics is not None:
                    self._metrics.allocation_errors.labels(name).inc()
                problems.append(e.message)
                log.warning("segment allocation of %r in %s failed: %s", tag, name, e.message)
                continue
            self._policy.record_success(name)
            if self._metrics is not None:
                self._metrics.allocations.labels(name).inc()
                self._metrics.allocation_seconds.labels(name).observe(time.perf_counter() - started)
            self._count_switches()
            return allocated
        raise errors.StorageError(
            f"no datacenter could allocate a range of {tag!r}: " + "; ".join(problems)
        )

    async def probe_down(self) -> None:
        """Ping the datacenters held as down, so recovery is noticed without an allocation."""
        for name in self._policy.down():
            try:
                await self._stores[name].ping()
            except errors.StorageError:
                self._policy.record_failure(name)
            else:
                self._policy.record_success(name)
        self._count_switches()

    async def close(self) -> None:
        await asyncio.gather(*(store.close() for store in self._stores.values()))

    def _count_switches(self) -> None:
        switches = self._policy.switches
        if switches != self._switches_seen:
            if self._metrics is not None:
                self._metrics.failovers.inc(switches - self._switches_seen)
            self._switches_seen = switches
            log.warning("segment ranges now come from datacenter %s", self._policy.current())


class PoolGate(Protocol):
    """What segments need of `etcd.poolwatch.PoolWatch`: is the pool's life still proven?"""

    def proven(self) -> bool: ...

    @property
    def reason(self) -> str: ...


class ClusterSegments:
    """The `SegmentSource` the app serves: the double buffer plus datacenter state.

    With a `gate` (cluster mode), IDs are served only while the pool's config is proven
    to be the life this sidecar started with; when that life ends, `reset` throws the
    buffered ranges away (they belong to the old life) and starts a new allocator.
    """

    def __init__(
        self,
        allocator: segment.SegmentAllocator,
        store: FailoverSegmentStore,
        *,
        gate: PoolGate | None = None,
        new_allocator: Callable[[], segment.SegmentAllocator] | None = None,
    ) -> None:
        self._allocator = allocator
        self._store = store
        self._gate = gate
        self._new_allocator = new_allocator
        self._retired: list[segment.SegmentAllocator] = []
        self._fresh = False  # a new allocator that has not loaded its first ranges yet
        self._starting: asyncio.Task[None] | None = None

    def tags(self) -> list[str]:
        return self._allocator.tags()

    def take_one(self, tag: str) -> int | None:
        return self._allocator.take_one(tag)

    async def next_ids(self, tag: str, count: int) -> list[int]:
        self._check_gate()
        allocator = self._allocator
        ids = await allocator.next_ids(tag, count)
        # The life may have ended while a range was loading: its IDs are not served.
        if allocator is not self._allocator:
            raise errors.NotReady(self._gate.reason if self._gate else "the pool changed")
        self._check_gate()
        return ids

    def ready_reason(self) -> str | None:
        if self._gate is not None and not self._gate.proven():
            return "not_ready"
        self._start_fresh()
        return self._allocator.ready_reason()

    async def start(self) -> None:
        await self._allocator.start()

    def reset(self, reason: str) -> None:
        """The pool's life ended: drop every buffered range, start over when it is back."""
        if self._new_allocator is None:
            return
        log.warning("segments: %s; buffered ranges are discarded", reason)
        self._retired.append(self._allocator)
        self._allocator = self._new_allocator()
        self._fresh = True

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        for allocator in self._retired:
            await allocator.close()
        await self._allocator.close()

    def _check_gate(self) -> None:
        gate = self._gate
        if gate is not None and not gate.proven():
            raise errors.NotReady(f"segments are not served: {gate.reason}", retry_after=0.5)
        self._start_fresh()

    def _start_fresh(self) -> None:
        """Load the first ranges of a new life once it is proven (readiness needs them)."""
        if self._fresh and (self._starting is None or self._starting.done()):
            self._fresh = False
            self._starting = asyncio.ensure_future(self._allocator.start())

    def info(self) -> JsonObject:
        """Per tag (as the standalone source reports it) and the datacenter choice."""
        return {"tags": self._allocator.info(), "failover": self._store.policy.info()}


class _BufferCollector(Collector):
    """Per-tag buffer gauges, read from `info()` at scrape time (nothing on the hot path)."""

    def __init__(self, source: ClusterSegments) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        remaining = GaugeMetricFamily(
            "nebula_id_segment_remaining", "IDs left in the current range", labels=["tag"]
        )
        step = GaugeMetricFamily("nebula_id_segment_step", "Current step", labels=["tag"])
        ready = GaugeMetricFamily(
            "nebula_id_segment_next_ready", "1 when the next range is loaded", labels=["tag"]
        )
        usable = GaugeMetricFamily(
            "nebula_id_segment_datacenter_usable",
            "1 when the datacenter is usable for new ranges",
            labels=["datacenter"],
        )
        tag_datacenter = GaugeMetricFamily(
            "nebula_id_segment_tag_datacenter",
            "1 for the datacenter the tag's current range came from",
            labels=["tag", "datacenter"],
        )
        current = GaugeMetricFamily(
            "nebula_id_segment_datacenter_current",
            "1 for the datacenter new ranges come from, labelled with why it was chosen",
            labels=["datacenter", "reason"],
        )
        switched = GaugeMetricFamily(
            "nebula_id_segment_datacenter_switch_timestamp_seconds",
            "Unix time of the last change of the datacenter new ranges come from (0: none yet)",
        )
        info = self._source.info()
        tags = jsontypes.as_object(info.get("tags")) or {}
        for tag in self._source.tags():
            entry = jsontypes.as_object(tags.get(tag))
            if entry is None:
                continue
            remaining.add_metric([tag], jsontypes.as_number(entry.get("remaining") or 0))
            step.add_metric([tag], jsontypes.as_number(entry.get("step") or 0))
            ready.add_metric([tag], 1.0 if entry.get("next_ready") else 0.0)
            if entry.get("datacenter"):
                tag_datacenter.add_metric([tag, str(entry["datacenter"])], 1.0)
        state = jsontypes.as_object(info.get("failover")) or {}
        for name, dc_state in (jsontypes.as_object(state.get("datacenters")) or {}).items():
            usable_now = (jsontypes.as_object(dc_state) or {}).get("usable")
            usable.add_metric([name], 1.0 if usable_now else 0.0)
        current.add_metric([str(state.get("current")), str(state.get("reason"))], 1.0)
        switched.add_metric([], jsontypes.as_number(state.get("switchedAtMs") or 0) / 1000)
        return [remaining, step, ready, usable, tag_datacenter, current, switched]


def datacenter_dsns(
    database: database_config.DatabaseSettings, datacenter: str | None, pool: pools.PoolConfig
) -> dict[str, str]:
    """Datacenter name -> DSN, checked against the pool's datacenters."""
    own = pool.datacenter(datacenter).name
    dsns = database.dsns()
    if database.url:
        dsns[own] = database.url
    known = {dc.name for dc in pool.datacenters}
    unknown = sorted(set(dsns) - known)
    if unknown:
        raise errors.ConfigError(
            f"database URLs name datacenters {unknown} that pool {pool.ref} does not have "
            f"(it has: {', '.join(sorted(known))})"
        )
    if not dsns:
        raise errors.ConfigError("segments need NEBULA_DATABASE_URL or NEBULA_DATABASE_URLS")
    return dsns


@contextlib.asynccontextmanager
async def open_segments(
    database: database_config.DatabaseSettings,
    pool: pools.PoolConfig,
    *,
    datacenter: str | None,
    overrides: failover_config.FailoverOverrides,
    keys: pool_keys.PoolKeys | None = None,
    clock: Clock,
    registry: CollectorRegistry,
    client: etcd_client.EtcdClient | None = None,
    watch: poolwatch.PoolWatch | None = None,
    failover_settings: failover.FailoverSettings | None = None,
    postgres_settings: postgres.PostgresSettings | None = None,
    health_recheck_s: float = health.RECHECK_S,
    prefetch_ratio: float = 0.1,
) -> AsyncIterator[ClusterSegments]:
    """Segment IDs from the datacenters' databases, for as long as the context is open.

    The failover settings are the pool's (`spec.failover`, each datacenter's own
    overrides) with the sidecar's local overrides on top, followed as the pool's
    config changes; `failover_settings`, when given, replaces the pool's for
    every datacenter, for good (tests).

    Cluster mode is `keys`, `client` and `watch` together: the pool's keys, the
    sidecar's etcd client and its running watch of `pool`'s config.  Without them (a
    database but no etcd) no floors are kept and the rows are created here.
    """
    if len({client is None, watch is None, keys is None}) != 1:
        raise errors.ConfigError(
            "segments in cluster mode need the pool's keys, the etcd client and the watch"
        )
    fixed = failover_settings
    per_datacenter = _failover_per_datacenter(overrides, pool, fixed)
    failover_settings = overrides.apply(fixed or pool.failover)
    dsns = datacenter_dsns(database, datacenter, pool)
    own = pool.datacenter(datacenter).name
    order = [dc.name for dc in pool.datacenters if dc.name in dsns]
    preferred = own if own in dsns else order[0]
    if preferred != own:
        log.warning("no database URL for the own datacenter %s; preferring %s", own, preferred)
    tags = list(pool.tags)
    async with contextlib.AsyncExitStack() as stack:
        stores: dict[str, floored.RepairableStore] = {}
        for dc in pool.datacenters:
            if dc.name not in dsns:
                continue
            # In cluster mode provisioning creates the rows and etcd floors guard them.
            store_of_dc = engines.open_store(
                dsns[dc.name],
                pool=pool,
                datacenter=dc,
                settings=postgres_settings,
                create_rows=client is None,
            )
            stores[dc.name] = (
                store_of_dc
                if client is None or keys is None
                else floored.FlooredStore(store_of_dc, client, keys)
            )
        policy = failover.Failover(
            order,
            preferred=preferred,
            clock=clock,
            settings=failover_settings,
            per_datacenter={name: per_datacenter[name] for name in order},
        )
        segment_metrics = SegmentMetrics(registry)
        for name in stores:  # every series from the start, so rate() and alerts see a 0
            segment_metrics.allocations.labels(name)
            segment_metrics.allocation_errors.labels(name)
        store = FailoverSegmentStore(stores, policy, metrics=segment_metrics)

        def new_allocator() -> segment.SegmentAllocator:
            return segment.SegmentAllocator(
                store,
                tags,
                clock=clock,
                prefetch_ratio=prefetch_ratio,
                load_timeout=LOAD_TIMEOUT_S,
            )

        source = ClusterSegments(
            new_allocator(), store, gate=watch, new_allocator=new_allocator if watch else None
        )
        collector = _BufferCollector(source)
        tasks: list[asyncio.Task[None]] = []
        stack.push_async_callback(store.close)
        stack.push_async_callback(source.close)
        if watch is not None:
            stack.callback(watch.on_change(source.reset))  # stops before the source closes
        stack.callback(registry.unregister, collector)
        registry.register(collector)
        tasks.append(asyncio.create_task(_probe_loop(store)))
        if client is not None and watch is not None and keys is not None:
            follower = health.HealthFollower(
                client, keys.health, policy, clock=clock, recheck_s=health_recheck_s
            )
            tasks.append(asyncio.create_task(follower.run(), name="health watch"))
            if fixed is None:
                stack.callback(watch.on_config(follow_settings(overrides, keys, pool, policy)))
        stack.push_async_callback(_cancel, tasks)
        await source.start()
        yield source


async def _probe_loop(store: FailoverSegmentStore) -> None:
    while True:
        await asyncio.sleep(store.policy.settings.probe_interval_s)
        await store.probe_down()


def follow_settings(
    overrides: failover_config.FailoverOverrides,
    keys: pool_keys.PoolKeys,
    pool: pools.PoolConfig,
    policy: failover.Failover,
) -> Callable[[bytes], None]:
    """What to do with each value of the pool's config key: take its failover settings.

    Only the settings: a config of another life or layout is the pool watch's to
    judge (it stops serving), and a bad one is ignored here.
    """

    def take(raw: bytes) -> None:
        try:
            changed = pool_store.decode(raw, keys)
        except errors.ConfigError:
            return
        if changed.layout != pool.layout:
            return
        per = _failover_per_datacenter(overrides, changed, None)
        new = overrides.apply(changed.failover)
        mine = {name: per[name] for name in policy.datacenters if name in per}
        if (new, mine) != (policy.settings, policy.per_datacenter):
            log.info("failover settings follow the pool's config: %s", new)
            policy.update_settings(new, mine)

    return take


def _failover_per_datacenter(
    overrides: failover_config.FailoverOverrides,
    pool: pools.PoolConfig,
    fixed: failover.FailoverSettings | None,
) -> dict[str, failover.FailoverSettings]:
    return {
        dc.name: overrides.apply(fixed or pool.failover_for(dc.name)) for dc in pool.datacenters
    }


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
