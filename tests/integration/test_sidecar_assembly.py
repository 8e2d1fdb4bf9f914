"""A cluster-mode sidecar holds one etcd client and one watch per key it follows.

The app factory opens the etcd client once and hands it to every adapter (the pool
config load, the worker-ID holder, the segment source with its floors, the health
watch); one pool-config watch serves them all.  Two independent counts show it: the
`EtcdClient` instances made while the real app starts and serves (counted by wrapping
the class, so an adapter that opened its own client would be counted too), and the
watch streams of a private etcd, read from etcd's own metrics.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from nebula_id.clock import SystemClock
from nebula_id.etcd import client as etcd
from nebula_id.http.app import build_app
from tests.integration.pool_life import Pool, spec
from tests.support.fixtures import EtcdFactory
from tests.support.postgres import PostgresCluster
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


def watch_streams(endpoint: str) -> int:
    """Open watch streams as etcd counts them (its gauge of the mvcc layer)."""
    with urllib.request.urlopen(endpoint + "/metrics", timeout=5) as response:  # nosec B310
        text = response.read().decode()
    found = re.search(r"^etcd_debugging_mvcc_watch_stream_total (\S+)$", text, re.MULTILINE)
    assert found, "etcd exports no etcd_debugging_mvcc_watch_stream_total"
    return int(float(found.group(1)))


class ClientCount:
    """Wraps `EtcdClient` so that every instance and every open watch is counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.instances = 0
        self.watching: Counter[str] = Counter()
        original_init = etcd.EtcdClient.__init__
        original_watch = etcd.EtcdClient.watch
        count = self

        def init(client: etcd.EtcdClient, settings: etcd.EtcdSettings) -> None:
            count.instances += 1
            original_init(client, settings)

        async def watch(
            client: etcd.EtcdClient, key: str, **kwargs: Any
        ) -> AsyncIterator[etcd.WatchEvent]:
            count.watching[key] += 1
            try:
                async for event in original_watch(client, key, **kwargs):
                    yield event
            finally:
                count.watching[key] -= 1

        monkeypatch.setattr(etcd.EtcdClient, "__init__", init)
        monkeypatch.setattr(etcd.EtcdClient, "watch", watch)


async def test_a_cluster_sidecar_holds_one_etcd_client_and_one_config_watch(
    etcd_factory: EtcdFactory,
    aiohttp_client: Callable[..., Awaitable[Client]],
    postgres: PostgresCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = etcd_factory()  # private: its metrics count this sidecar's streams only
    pool = Pool(server.endpoint, postgres.dsn(), tmp_path, name=f"a-{uuid.uuid4().hex[:8]}")
    await pool.apply(spec())
    assert watch_streams(server.endpoint) == 0

    count = ClientCount(monkeypatch)
    app = build_app(pool.serve_settings("pod"), clock=SystemClock(), registry=CollectorRegistry())
    client = await aiohttp_client(app)
    started = time.monotonic()
    while (ready := await client.get("/readyz")).status != 200:
        assert time.monotonic() - started < 20, await ready.text()
        await asyncio.sleep(0.05)
    segment = await client.get("/v1/ids/segment/orders")
    assert segment.status == 200, await segment.text()  # floors and the DB are in use

    config_key, health_key = pool.keys.config, pool.keys.health
    await eventually_async(
        lambda: count.watching[config_key] >= 1 and count.watching[health_key] >= 1,
        timeout=10,
        what="the config and health watches to open",
    )
    await eventually_async(
        lambda: watch_streams(server.endpoint) >= 2, timeout=10, what="etcd to see both streams"
    )
    # Every watcher starts with the app; a second one of a key would open within a round
    # trip of the first.  Look over a whole config poll interval (ttl / 4) for one more.
    deadline = time.monotonic() + spec()["lease"]["ttlSeconds"] / 4 + 0.5
    while time.monotonic() < deadline:
        streams = watch_streams(server.endpoint)
        print(
            f"etcd clients {count.instances}, watches by key {dict(count.watching)}, "
            f"streams at etcd {streams}"
        )
        assert count.instances == 1
        assert count.watching[config_key] == 1
        assert count.watching[health_key] == 1
        assert sum(count.watching.values()) == 2
        assert streams == 2
        await asyncio.sleep(0.1)
