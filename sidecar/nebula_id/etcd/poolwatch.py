"""A sidecar follows its pool's config: it serves only while the pool it started with exists.

A pool can be deleted (and its data dropped) or deleted and created again while its
sidecars run.  The IDs a sidecar hands out are only unique within the life of the pool
it knows: its layout, its datacenter ID, and the rows and marks of that life.  So every
sidecar watches the config key and stops issuing Snowflake and Segment IDs (503
``not_ready``) the moment the config disappears, or comes back as another life (a new
create revision) or with another identity (layout, epoch, datacenter ID).

A watch can lag (a partition between the sidecar and etcd), so the watch alone is not
enough: like a lease, the config is re-read every ``ttl/4`` and only a read that
answered in time proves it, until ``send + ttl - margin``.  An operator that drops a
pool's data waits a full lease TTL after removing the config, so by then every sidecar
of the old life has stopped on its own, whether or not its watch saw the deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from nebula_id import clock as clocks
from nebula_id import errors
from nebula_id.core import keys as pool_keys
from nebula_id.core import lease as leases
from nebula_id.core import pool as pools
from nebula_id.etcd import client as etcd
from nebula_id.etcd import pools as pool_store

log = logging.getLogger(__name__)


class PoolWatch:
    """The proven presence of one pool's config (same identity) for one datacenter."""

    def __init__(
        self,
        client: etcd.EtcdClient,
        keys: pool_keys.PoolKeys,
        pool: pools.PoolConfig,
        *,
        datacenter_id: int,
        clock: clocks.Clock,
    ) -> None:
        self._client = client
        self._keys = keys
        self._pool = pool
        self._dc = datacenter_id
        self._clock = clock
        self._timing = leases.LeaseTiming(pool.lease_ttl_seconds)
        self._create_revision: int | None = None
        self._generation = pool.generation
        self._deadline = 0.0
        self._reason = "reading the pool's config"
        self.known = asyncio.Event()
        """Set after the first read (whatever it found)."""
        self.present = asyncio.Event()
        """Set while the config of the same identity is known to exist."""
        self._listeners: list[Callable[[str], None]] = []
        self._value_listeners: list[Callable[[bytes], None]] = []
        self._last_value: bytes | None = None

    @property
    def create_revision(self) -> int | None:
        """The create revision of the matching config (None while there is none)."""
        return self._create_revision

    @property
    def generation(self) -> int:
        """The generation of the config last seen matching (the pool's current life)."""
        return self._generation

    @property
    def reason(self) -> str:
        return self._reason

    def proven(self) -> bool:
        """True while a recent read proved the config (same identity, same life)."""
        return self._create_revision is not None and self._clock.monotonic() < self._deadline

    def on_change(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(reason)` whenever the pool's life the sidecar serves ends.

        Returns the call that stops it (a listener closes before the watch does).
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def on_config(self, listener: Callable[[bytes], None]) -> Callable[[], None]:
        """Call `listener(value)` with every value of the config key read or watched.

        Whatever the value holds (another life, layout or a bad document): what to take
        from it is the listener's to judge.  A listener that fails is logged and does not
        stop the watch.  The last value seen, if any, is handed over at once.  Returns
        the call that stops it.
        """
        self._value_listeners.append(listener)
        if self._last_value is not None:
            self._tell_value(self._last_value, [listener])
        return lambda: self._value_listeners.remove(listener)

    async def run(self) -> None:
        """Follow the config until cancelled (etcd failures are retried, never raised)."""
        poller = asyncio.create_task(self._poll(), name=f"pool config poll {self._pool.ref}")
        try:
            await self._watch()
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def check(self) -> None:
        """One read of the config; proves it until ``send + ttl - margin`` when it matches."""
        sent = self._clock.monotonic()
        kv = await self._client.get(self._keys.config, call_timeout=max(1.0, self._timing.interval))
        if self._observe(kv):
            self._deadline = self._timing.deadline(sent)

    async def _poll(self) -> None:
        while True:
            try:
                await self.check()
            except errors.CoordinationError as e:
                log.warning("pool %s: cannot read its config (%s)", self._pool.ref, e.message)
            await asyncio.sleep(self._timing.interval)

    async def _watch(self) -> None:
        backoff = 0.1
        while True:
            try:
                start = (await self._client.range(self._keys.config)).revision + 1
                async for event in self._client.watch(self._keys.config, start_revision=start):
                    was_present = self.present.is_set()
                    self._observe(event.kv if event.type == "PUT" else None)
                    if self.present.is_set() and not was_present:
                        await self.check()  # prove the new life now, not at the next poll
                    backoff = 0.1
            except errors.CoordinationError as e:
                log.debug("pool %s: config watch broke (%s)", self._pool.ref, e.message)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._timing.interval)

    def _observe(self, kv: etcd.KeyValue | None) -> bool:
        """Take in one state of the config key; True when it is the pool we serve."""
        if kv is not None:
            self._last_value = kv.value
            self._tell_value(kv.value, list(self._value_listeners))
        why = self._mismatch(kv)
        self.known.set()
        if why is None and kv is not None:
            if self._create_revision is not None and self._create_revision != kv.create_revision:
                self._end(f"pool {self._pool.ref} was deleted and created again")
            self._create_revision = kv.create_revision
            self._reason = "serving"
            self.present.set()
            return True
        if self._create_revision is not None or self.present.is_set():
            self._end(why or "the pool's config changed")
        self._reason = why or "the pool's config changed"
        return False

    def _end(self, reason: str) -> None:
        log.warning("%s: no Snowflake or Segment ID is issued for it any more", reason)
        self._create_revision = None
        self._deadline = 0.0
        self.present.clear()
        for listener in list(self._listeners):
            listener(reason)

    def _tell_value(self, value: bytes, listeners: list[Callable[[bytes], None]]) -> None:
        for listener in listeners:
            try:
                listener(value)
            except Exception:  # a listener's bug must not stop the pool's safety watch
                log.exception("pool %s: a config listener failed", self._pool.ref)

    def _mismatch(self, kv: etcd.KeyValue | None) -> str | None:
        ref = self._pool.ref
        if kv is None:
            return f"pool {ref} was deleted (its config is gone from etcd)"
        try:
            config = pool_store.decode(kv.value, self._keys)
        except errors.ConfigError as e:
            return e.message
        if config.layout == self._pool.layout:
            self._generation = config.generation
        if config.layout != self._pool.layout:
            return (
                f"pool {ref} now has another layout or epoch ({config.layout.to_json()}); "
                "restart the sidecar to serve it"
            )
        ids = {dc.id for dc in config.datacenters}
        if self._dc not in ids:
            return f"pool {ref} no longer has datacenter ID {self._dc}; restart the sidecar"
        return None


@contextlib.asynccontextmanager
async def watching(
    client: etcd.EtcdClient,
    keys: pool_keys.PoolKeys,
    pool: pools.PoolConfig,
    *,
    datacenter_id: int,
    clock: clocks.Clock,
) -> AsyncIterator[PoolWatch]:
    """A running `PoolWatch` for as long as the block lasts (the sidecar's one config watch).

    The config is read once before the block starts, so the pool is proven from the
    first request on (an etcd failure leaves it unproven: the watch keeps trying).
    """
    watch = PoolWatch(client, keys, pool, datacenter_id=datacenter_id, clock=clock)
    with contextlib.suppress(errors.CoordinationError):
        await watch.check()
    task = asyncio.create_task(watch.run(), name=f"pool config watch {pool.ref}")
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
