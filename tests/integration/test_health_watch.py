"""The sidecar watches the published health: fast, through etcd restarts, and ageing out.

`storage.health.HealthFollower` against a real etcd, feeding a real
`core.failover.Failover`: a published verdict reaches the policy in well under a
second; after etcd is killed and started again the watch resumes by itself;
after a compaction past everything it had seen it still follows; and a document
that stops being refreshed turns into "unknown" after `healthMaxAgeSeconds`.
Changed failover settings in the pool's config apply at once, too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable

import aiohttp

from nebula_id.clock import SystemClock
from nebula_id.core import failover, poolspec
from nebula_id.core import layout as layouts
from nebula_id.core import pool as pools
from nebula_id.etcd import client as etcd_client
from nebula_id.etcd import pools as pool_store
from nebula_id.etcd import poolwatch
from nebula_id.storage import health, postgres_source
from tests.support import sidecar as sidecars
from tests.support.etcd import EtcdServer
from tests.support.waiting import eventually_async

KEY = "/nebula-id-health-watch/pools/it/watched/health"
# A watch answers in milliseconds; the ceiling is generous for a loaded machine, and the
# measured reaction times are printed.
REACTION_CEILING_S = 10.0


def document(a_healthy: bool, *, age_s: float = 0.0) -> bytes:
    stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)).isoformat()
    entry = {"healthy": a_healthy, "reason": "ok" if a_healthy else "down", "checkedAt": stamp}
    return json.dumps({"datacenters": {"dc-a": entry}, "updatedAt": stamp}).encode()


@contextlib.asynccontextmanager
async def following(
    endpoint: str, *, max_age_s: float = 30.0
) -> AsyncIterator[tuple[failover.Failover, health.HealthFollower]]:
    policy = failover.Failover(["dc-a", "dc-b"], preferred="dc-a", clock=SystemClock())
    settings = etcd_client.EtcdSettings(endpoints=(endpoint,))
    async with etcd_client.EtcdClient(settings) as client:
        follower = health.HealthFollower(
            client, KEY, policy, clock=SystemClock(), max_age_s=max_age_s, recheck_s=0.2
        )
        task = asyncio.create_task(follower.run())
        try:
            yield policy, follower
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def compact(endpoint: str, revision: int) -> None:
    """Compact etcd's history up to `revision` (the v3 gateway's compaction call)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{endpoint}/v3/kv/compaction", json={"revision": str(revision)}) as reply,
    ):
        assert reply.status == 200, await reply.text()


async def test_a_published_change_reaches_the_policy_promptly(
    etcd_factory: Callable[[], EtcdServer],
) -> None:
    server = etcd_factory()
    settings = etcd_client.EtcdSettings(endpoints=(server.endpoint,))
    async with (
        etcd_client.EtcdClient(settings) as writer,
        following(server.endpoint) as (
            policy,
            follower,
        ),
    ):
        await writer.put(KEY, document(True))
        await eventually_async(lambda: follower.updates >= 1, timeout=5, what="the first document")
        reactions = []
        for healthy in (False, True, False, True):
            await writer.put(KEY, document(healthy))
            started = time.monotonic()
            await eventually_async(
                lambda h=healthy: policy.usable("dc-a") is h,  # type: ignore[misc]
                timeout=REACTION_CEILING_S,
                what=f"dc-a usable={healthy}",
                interval=0.01,
            )
            reactions.append(time.monotonic() - started)
        print(f"published health reached the policy in {max(reactions) * 1000:.0f} ms at most")


async def test_the_watch_resumes_after_etcd_is_killed_and_after_a_compaction(
    etcd_factory: Callable[[], EtcdServer],
) -> None:
    server = etcd_factory()
    settings = etcd_client.EtcdSettings(endpoints=(server.endpoint,))
    async with following(server.endpoint) as (policy, _):
        async with etcd_client.EtcdClient(settings) as writer:
            await writer.put(KEY, document(True))
        await eventually_async(lambda: policy.usable("dc-a"), timeout=5, what="dc-a usable")
        server.kill()
        await asyncio.sleep(0.5)
        server.start()
        async with etcd_client.EtcdClient(settings) as writer:
            await writer.put(KEY, document(False))
            started = time.monotonic()
            await eventually_async(
                lambda: not policy.usable("dc-a"), timeout=5, what="the verdict after a restart"
            )
            took = time.monotonic() - started
            print(f"after an etcd restart the watch saw a change in {took:.2f} s")
            for _ in range(20):  # history to compact away
                await writer.put(KEY + "-noise", b"x")
            revision = (await writer.range(KEY)).revision
            await compact(server.endpoint, revision)
        server.kill()
        server.start()
        async with etcd_client.EtcdClient(settings) as writer:
            await writer.put(KEY, document(True))
            await eventually_async(
                lambda: policy.usable("dc-a"), timeout=5, what="the verdict after a compaction"
            )


async def test_a_document_no_longer_refreshed_becomes_unknown(
    etcd_factory: Callable[[], EtcdServer],
) -> None:
    server = etcd_factory()
    settings = etcd_client.EtcdSettings(endpoints=(server.endpoint,))
    async with following(server.endpoint, max_age_s=1.0) as (policy, _):
        async with etcd_client.EtcdClient(settings) as writer:
            await writer.put(KEY, document(False))
        await eventually_async(lambda: not policy.usable("dc-a"), timeout=5, what="dc-a unusable")
        # Nobody refreshes it (the operator stopped): it ages out, dc-a is usable again.
        started = time.monotonic()
        await eventually_async(
            lambda: policy.usable("dc-a"), timeout=3, what="the verdict to age out", interval=0.01
        )
        took = time.monotonic() - started
        assert policy.info()["datacenters"]["dc-a"]["publishedHealthy"] is None
        print(f"an unrefreshed verdict was dropped {took:.2f} s after it was seen")


async def test_changed_failover_settings_in_the_pool_config_apply_at_once(
    etcd_factory: Callable[[], EtcdServer],
) -> None:
    server = etcd_factory()

    def config(threshold: int, hold_down: float) -> pools.PoolConfig:
        spec = {
            # The config watch also re-reads the key every ttl / 4 (a put racing the
            # watch's start is taken then): well within the budget below.
            "lease": {"ttlSeconds": 2},
            "failover": {"failureThreshold": threshold, "holdDownSeconds": hold_down},
            "datacenters": [
                {"name": "dc-a", "id": 1, "failover": {"failureThreshold": threshold + 1}},
                {"name": "dc-b", "id": 2},
            ],
        }
        return poolspec.parse_spec(spec, namespace="it", name="live")

    settings = sidecars.cluster_settings(server.endpoint, pool="it/live", prefix="/nebula-id-live")
    first = config(3, 30)
    policy = failover.Failover(
        ["dc-a", "dc-b"],
        preferred="dc-a",
        clock=SystemClock(),
        settings=first.failover,
        per_datacenter={dc.name: first.failover_for(dc.name) for dc in first.datacenters},
    )
    key = settings.pool_keys().config
    take = postgres_source.follow_settings(settings.failover, settings.pool_keys(), first, policy)
    async with etcd_client.EtcdClient(etcd_client.EtcdSettings(endpoints=(server.endpoint,))) as c:
        await c.put(key, pool_store.encode(first))
        async with poolwatch.watching(
            c, settings.pool_keys(), first, datacenter_id=1, clock=SystemClock()
        ) as watch:
            watch.on_config(take)
            assert policy.settings_for("dc-a").failure_threshold == 4
            await c.put(key, pool_store.encode(config(1, 2)))
            started = time.monotonic()
            await eventually_async(
                lambda: policy.settings.hold_down_s == 2.0,
                timeout=REACTION_CEILING_S,
                what="the new settings",
                interval=0.01,
            )
            took = time.monotonic() - started
            assert policy.settings_for("dc-a").failure_threshold == 2
            assert policy.settings_for("dc-b").failure_threshold == 1
            print(f"changed failover settings applied {took * 1000:.0f} ms after the put")
            # Another layout is another pool: its settings are not taken.
            other = dataclasses.replace(config(5, 9), layout=layouts.SnowflakeLayout(epoch_ms=1))
            await c.put(key, pool_store.encode(other))
            await asyncio.sleep(0.3)
            assert policy.settings.hold_down_s == 2.0
