"""Hold a Snowflake worker ID through an etcd lease: claim, keep alive, fence, re-claim.

The app factory calls `load_pool_config` and `open_snowflake` with its etcd client.
Inside, a `WorkerHolder` task runs the life of a claim:

1. grant a lease and claim the lowest free `workers/{dc}/{worker}` with a
   create-if-absent transaction attached to the lease (bounded retries, jitter);
2. read the high-water mark `clock/{dc}/{worker}`, persist a new one ahead of the clock
   (fenced on still holding the claim), and only then let the generator serve, past
   the old mark;
3. every tick, renew the lease and advance the mark in a transaction that succeeds only
   while the claim key still carries our lease; the generator's lease deadline moves
   only when both succeed, so a holder cut off from etcd stops itself in time;
4. when the lease is gone or the claim taken, stop, and claim again from scratch;
5. on exit, lower the mark to the last timestamp really issued, then revoke the lease.

Alongside, the sidecar's `poolwatch.PoolWatch` follows the pool's config: when the pool
is deleted or comes back as another life or identity, the generator stops at once and
the claim is given up; a claim is only ever made while the config it started with
exists (the claim transaction compares the config's create revision), so no holder can
start in a pool that is being deleted or dropped.

The etcd client and the pool watch are the sidecar's, opened by the app factory and
passed in: this module opens no connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import random
import socket
from collections.abc import AsyncIterator

import prometheus_client

from nebula_id import clock as clocks
from nebula_id import errors
from nebula_id.config import pod as pod_config
from nebula_id.core import keys as pool_keys
from nebula_id.core import lease as leases
from nebula_id.core import pool as pools
from nebula_id.etcd import cache, claims, poolwatch
from nebula_id.etcd import client as etcd
from nebula_id.etcd import pools as pool_store
from nebula_id.etcd import source as sources

log = logging.getLogger(__name__)

FIRST_CLAIM_WAIT = 1.0
"""How long `open_snowflake` waits for the first claim before yielding (start-up stays fast)."""


async def load_pool_config(
    keys: pool_keys.PoolKeys,
    *,
    client: etcd.EtcdClient,
    data_dir: pathlib.Path,
    clock: clocks.Clock,
) -> pools.PoolConfig:
    """The pool's config from etcd (cached in the data dir), or the cache when etcd is down.

    A pool that etcd does not know is a start-up error, with the command that fixes it.
    """
    del clock  # the config carries no time; kept for the app factory's uniform calls
    try:
        stored = await pool_store.get(client, keys)
    except errors.CoordinationError as e:
        cached = cache.load(data_dir, keys)
        if cached is None:
            raise errors.CoordinationError(
                f"cannot read pool {keys.namespace}/{keys.name} from etcd ({e.message}) and "
                f"no cached config is in {data_dir}"
            ) from e
        log.warning(
            "etcd is unreachable (%s); using the cached config of pool %s. "
            "Snowflake stays unavailable until a worker ID is claimed",
            e.message,
            cached.ref,
        )
        return cached
    if stored is None:
        raise errors.ConfigError(
            f"pool {keys.namespace}/{keys.name} has no config at {keys.config}; create it "
            "with `nebula-id pool apply -f pool.yaml` or as a NebulaIdPool resource"
        )
    cache.save(data_dir, stored.config, keys)
    return stored.config


@contextlib.asynccontextmanager
async def open_snowflake(
    keys: pool_keys.PoolKeys,
    pool: pools.PoolConfig,
    *,
    datacenter: str | None,
    pod: pod_config.PodSettings,
    client: etcd.EtcdClient,
    watch: poolwatch.PoolWatch,
    clock: clocks.Clock,
    registry: prometheus_client.CollectorRegistry | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[sources.LeasedSnowflake]:
    """A leased Snowflake source; the worker ID is released when the block exits.

    `watch` is the sidecar's running watch of `pool`'s config (`poolwatch.watching`).
    """
    own = pool.datacenter(datacenter)
    source = sources.LeasedSnowflake(
        layout=pool.layout,
        pool_ref=pool.ref,
        datacenter_name=own.name,
        datacenter_id=own.id,
        clock=clock,
        metrics=sources.WorkerMetrics(registry or prometheus_client.CollectorRegistry()),
        issue_after_ms=pool.snowflake_issue_after_ms,
    )
    identity = claims.ClaimRecord(
        pod=pod.name,
        pod_uid=pod.uid,
        namespace=pod.namespace,
        host=pod.node_name or socket.gethostname(),
        pid=os.getpid(),
        lease=0,
        claimed_at_ms=0,
    )
    holder = WorkerHolder(
        client,
        keys,
        pool,
        datacenter_id=own.id,
        source=source,
        identity=identity,
        clock=clock,
        # Bandit B311 accepted: retry jitter, not a secret
        rng=rng or random.Random(),  # nosec B311
        watch=watch,
    )
    task = asyncio.create_task(holder.run(), name=f"nebula-id worker {pool.ref}")
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(holder.first_round.wait(), FIRST_CLAIM_WAIT)
        yield source
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await holder.release()


class _ClaimLost(Exception):
    """The lease expired or the claim key no longer carries it."""


class WorkerHolder:
    """The background life of one sidecar's worker-ID claim.

    `watch` is a running `poolwatch.PoolWatch` of the same pool and datacenter (its
    owner runs it; the holder only listens and reads its proof).
    """

    def __init__(
        self,
        client: etcd.EtcdClient,
        keys: pool_keys.PoolKeys,
        pool: pools.PoolConfig,
        *,
        datacenter_id: int,
        source: sources.LeasedSnowflake,
        identity: claims.ClaimRecord,
        clock: clocks.Clock,
        rng: random.Random,
        watch: poolwatch.PoolWatch,
    ) -> None:
        self._client = client
        self._watch = watch
        self._stop_listening = watch.on_change(self._pool_ended)
        self._holding: asyncio.Task[None] | None = None
        self._ended: str | None = None
        self._keys = keys
        self._pool = pool
        self._dc = datacenter_id
        self._source = source
        self._identity = identity
        self._clock = clock
        self._rng = rng
        self._timing = leases.LeaseTiming(pool.lease_ttl_seconds)
        self._call_timeout = min(client.settings.timeout, max(1.0, self._timing.interval))
        self._lease: int | None = None
        self._worker: int | None = None
        # What the previous claim of this process left, to re-claim without a long wait.
        self._previous: tuple[int, int, int] | None = None  # (worker, lease, last ms)
        self.first_round = asyncio.Event()

    @property
    def worker(self) -> int | None:
        return self._worker

    def _pool_ended(self, reason: str) -> None:
        """The pool's config is gone or another life: stop now, give the claim up."""
        retired = self._source.stop(sources.NOT_READY, reason)
        if retired is not None and self._worker is not None and self._lease is not None:
            self._previous = (self._worker, self._lease, retired.last_timestamp_ms)
        task = self._holding
        if task is not None and not task.done():
            self._ended = reason
            task.cancel()

    async def _hold_once(self) -> None:
        self._holding = asyncio.create_task(self._hold(), name="worker ID claim")
        try:
            await self._holding
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._ended is None or (current is not None and current.cancelling()):
                raise
            reason, self._ended = self._ended, None
            raise _ClaimLost(reason) from None

    async def run(self) -> None:
        """Claim, hold and re-claim until cancelled (etcd failures are retried)."""
        backoff = 0.1
        while True:
            try:
                await self._hold_once()
            except _ClaimLost as e:
                await self._lost(str(e))
                backoff = 0.1
            except errors.CoordinationError as e:
                if self._source.generator is None:
                    self._source.set_state(
                        sources.LEASE_LOST, f"cannot claim a worker ID, etcd fails: {e.message}"
                    )
                log.warning("worker ID: etcd failed (%s); retrying", e.message)
                self.first_round.set()
                await self._clock.sleep_async(backoff * self._rng.uniform(0.5, 1.5))
                backoff = min(backoff * 2, self._timing.interval)

    async def release(self) -> None:
        """Stop issuing, lower the mark to the last timestamp issued, revoke the lease."""
        with contextlib.suppress(ValueError):  # released once already
            self._stop_listening()
        retired = self._source.stop(sources.NOT_READY, "shutting down")
        lease, worker = self._lease, self._worker
        self._lease = self._worker = None
        if lease is None:
            return
        try:
            if worker is not None and retired is not None:
                await self._write_mark(lease, worker, retired.last_timestamp_ms, lowering=True)
            await self._client.revoke(lease, call_timeout=self._call_timeout)
        except errors.CoordinationError as e:
            log.warning("worker ID: could not release it cleanly (%s); it expires by TTL", e)

    # -- one claim, from grant to loss ------------------------------------------------------

    async def _until_config(self) -> None:
        """Wait until the config of the pool this sidecar serves exists."""
        if not self._watch.known.is_set():
            await self._watch.check()  # an etcd failure is reported like any other
        if not self._watch.present.is_set():
            self._source.set_state(sources.NOT_READY, self._watch.reason)
            self.first_round.set()
            await self._watch.present.wait()

    async def _hold(self) -> None:
        await self._until_config()
        if self._lease is not None:
            # A previous round failed half-way: do not leave its lease (and claim) behind.
            stale, self._lease, self._worker = self._lease, None, None
            with contextlib.suppress(errors.CoordinationError):
                await self._client.revoke(stale, call_timeout=self._call_timeout)
        lease = await self._client.grant(self._timing.ttl_seconds)
        self._lease = lease.id
        worker = await self._claim(lease.id)
        while worker is None:
            self._source.set_state(
                sources.EXHAUSTED,
                f"all {self._pool.layout.worker_capacity} worker IDs are held; retrying",
            )
            self.first_round.set()
            await self._clock.sleep_async(
                min(1.0, self._timing.interval) * self._rng.uniform(0.5, 1.5)
            )
            await self._keepalive(lease.id)
            worker = await self._claim(lease.id)
        self._worker = worker
        self._source.metrics.claims.inc()
        await self._start_serving(lease.id, worker)
        self.first_round.set()
        await self._keep(lease.id, worker)

    async def _claim(self, lease: int) -> int | None:
        """Create-if-absent on the lowest free worker ID; None when all are held."""
        prefix = self._keys.workers_of(self._dc)
        capacity = self._pool.layout.worker_capacity
        for attempt in range(claims.CLAIM_ATTEMPTS):
            held = await self._client.range(prefix, prefix=True)
            taken: set[int] = set()
            for kv in held.kvs:
                worker = claims.worker_of_key(kv.key)
                if worker is None:
                    continue
                if kv.lease == lease:
                    return worker  # an earlier attempt did succeed; its answer was lost
                taken.add(worker)
            free = claims.free_workers(taken, capacity)
            if not free:
                return None
            worker = claims.candidate(free, attempt, self._rng)
            key = self._keys.worker(self._dc, worker)
            record = _with(self._identity, lease=lease, claimed_at_ms=self._clock.wall_ms())
            config_revision = self._watch.create_revision
            if config_revision is None:
                raise _ClaimLost(self._watch.reason)
            result = await self._client.txn(
                [
                    etcd.Compare.absent(key),
                    # Only while the config the watch last proved exists: not while the
                    # pool is deleted (its data maybe being dropped), nor in a life of
                    # it that this sidecar has not checked yet.
                    etcd.Compare(self._keys.config, "CREATE", "EQUAL", config_revision),
                ],
                [etcd.Put(key, record.to_json(), lease=lease)],
                call_timeout=self._call_timeout,
            )
            if result.succeeded:
                log.info("worker ID: claimed %s (lease %x)", key, lease)
                return worker
            if self._watch.create_revision != config_revision:
                raise _ClaimLost(self._watch.reason)
            config = await self._client.get(self._keys.config)
            if config is None or config.create_revision != config_revision:
                raise _ClaimLost(f"pool {self._pool.ref}'s config changed while claiming")
            await self._clock.sleep_async(self._rng.uniform(0, 0.02 * (attempt + 1)))
        raise errors.CoordinationError(
            f"lost the race for a free worker ID {claims.CLAIM_ATTEMPTS} times in a row"
        )

    async def _start_serving(self, lease: int, worker: int) -> None:
        key = self._keys.clock(self._dc, worker)
        mark = _read_mark(await self._client.get(key), key)
        previous = self._previous if self._previous and self._previous[0] == worker else None
        floor = claims.floor_for_new_holder(
            mark,
            previous_lease=previous[1] if previous else None,
            previous_last_ms=previous[2] if previous else None,
        )
        now = self._clock.wall_ms()
        new_mark = max(now, floor) + self._timing.horizon_ms
        if not await self._write_mark(lease, worker, new_mark):
            raise _ClaimLost(f"the claim of worker {worker} vanished before serving")
        sent = self._clock.monotonic()
        await self._keepalive(lease)
        if floor >= now:
            waited = (floor - now + 1) / 1000
            self._source.metrics.mark_wait_seconds.inc(waited)
            log.info("worker ID %d: waiting %.3f s for the clock to pass the mark", worker, waited)
        self._source.start(
            worker=worker,
            lease_id=lease,
            tolerance_ms=self._pool.clock_backward_tolerance_ms,
            wait_past_ms=floor,
            mark_ms=new_mark,
            lease_deadline=self._timing.deadline(sent),
        )

    async def _keep(self, lease: int, worker: int) -> None:
        """Renew and advance every tick until the lease or the claim is lost."""
        failing_since: float | None = None
        while True:
            await self._clock.sleep_async(self._timing.interval)
            sent = self._clock.monotonic()
            try:
                await self._keepalive(lease)
                generator = self._source.generator
                allowed = (generator.high_water_mark_ms or 0) if generator else 0
                last = generator.last_timestamp_ms if generator else 0
                mark = max(self._clock.wall_ms() + self._timing.horizon_ms, allowed, last)
                if not await self._write_mark(lease, worker, mark):
                    raise _ClaimLost(f"worker {worker}'s claim is no longer ours")
            except errors.CoordinationError as e:
                if failing_since is None:
                    failing_since = sent
                    log.warning("worker ID %d: etcd fails (%s); lease deadline runs", worker, e)
                continue
            if failing_since is not None:
                log.info("worker ID %d: etcd answers again", worker)
                failing_since = None
            self._source.extend(mark_ms=mark, lease_deadline=self._timing.deadline(sent))

    async def _keepalive(self, lease: int) -> None:
        try:
            await self._client.keepalive(lease, call_timeout=self._call_timeout)
        except etcd.LeaseNotFound as e:
            raise _ClaimLost(f"lease {lease:x} expired") from e

    async def _write_mark(
        self, lease: int, worker: int, mark_ms: int, *, lowering: bool = False
    ) -> bool:
        """Persist `mark_ms`, only while the claim key still carries `lease`.

        The stored mark never goes down: the write is a compare-and-swap on the mark's
        mod_revision and stores the max of both, so a write that etcd applies late
        (its client had given up on it) fails instead of undoing a newer one.  Only
        `lowering` (the release) may store a lower value, and only over a mark of its
        own lease: every ID it issued is at or below its last timestamp.
        """
        claim_key = self._keys.worker(self._dc, worker)
        clock_key = self._keys.clock(self._dc, worker)
        stored = await self._client.get(clock_key, call_timeout=self._call_timeout)
        for _ in range(claims.CLAIM_ATTEMPTS):
            current = _read_mark(stored, clock_key)
            value = mark_ms
            if current is not None and not (lowering and current.lease == lease):
                value = max(mark_ms, current.ms)
            mark = claims.HighWaterMark(ms=value, lease=lease, generation=self._watch.generation)
            result = await self._client.txn(
                [
                    etcd.Compare.lease_equals(claim_key, lease),
                    etcd.Compare.mod_revision(clock_key, stored.mod_revision if stored else 0),
                ],
                [etcd.Put(clock_key, mark.to_json())],
                [etcd.Get(claim_key), etcd.Get(clock_key)],
                call_timeout=self._call_timeout,
            )
            if result.succeeded:
                return True
            claim_kvs, clock_kvs = result.ranges
            if not claim_kvs or claim_kvs[0].lease != lease:
                return False
            stored = clock_kvs[0] if clock_kvs else None
        raise errors.CoordinationError(f"the mark at {clock_key} kept changing under us")

    async def _lost(self, why: str) -> None:
        retired = self._source.stop(sources.LEASE_LOST, f"re-claiming a worker ID: {why}")
        if self._worker is not None and self._lease is not None and retired is not None:
            self._previous = (self._worker, self._lease, retired.last_timestamp_ms)
            self._source.metrics.leases_lost.inc()
        log.warning("worker ID: %s; claiming again", why)
        old_lease = self._lease
        self._lease = self._worker = None
        if old_lease is not None:
            # The lease may still live while the claim was taken: do not keep it around.
            with contextlib.suppress(errors.CoordinationError):
                await self._client.revoke(old_lease, call_timeout=self._call_timeout)


def _read_mark(stored: etcd.KeyValue | None, key: str) -> claims.HighWaterMark | None:
    try:
        return claims.HighWaterMark.from_json(stored.value) if stored else None
    except ValueError as e:
        raise errors.CoordinationError(
            f"the high-water mark at {key} is unreadable ({e}); refusing to guess"
        ) from e


def _with(record: claims.ClaimRecord, *, lease: int, claimed_at_ms: int) -> claims.ClaimRecord:
    return dataclasses.replace(record, lease=lease, claimed_at_ms=claimed_at_ms)
