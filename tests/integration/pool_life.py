"""Helpers of the pool-life tests: a pool, sidecars in process, client load, the operator's
deletion, and the `nebula-id pool` CLI, all against one real etcd and a real segment
database (PostgreSQL or MariaDB, as the DSN says).

A sidecar here is what `nebula-id serve` runs in cluster mode: `worker.open_snowflake`
and `postgres_source.open_segments` on one `ServeSettings`, sharing one etcd client and
one pool watch.  `Load` calls both without
pause and records every ID it was given, so a test can assert that none repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import prometheus_client
import yaml

from nebula_id import errors
from nebula_id.clock import SystemClock
from nebula_id.config import database as database_config
from nebula_id.config import operator as operator_settings
from nebula_id.config import serve as settings_mod
from nebula_id.core import crd
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.etcd import client as etcd
from nebula_id.etcd import pools as pool_store
from nebula_id.etcd import worker
from nebula_id.storage import engines, postgres_source
from nebula_id.storage import postgres as pg_store
from nebula_id_operator import metrics as operator_metrics
from nebula_id_operator import reconcile
from tests.support import sidecar as sidecars

NAMESPACE = "life"
TAG = "orders"
TTL = 2
EPOCH = "2024-01-01T00:00:00Z"


def spec(*, epoch: str = EPOCH, worker_bits: int = 5, datacenters: Any = None) -> dict[str, Any]:
    return {
        "algorithm": "snowflake",
        "snowflake": {
            "epoch": epoch,
            "timestampBits": 41,
            "datacenterBits": 5,
            "workerBits": worker_bits,
            "sequenceBits": 17 - worker_bits,
        },
        "datacenters": datacenters
        or [{"name": "dc-a", "databaseSecretRef": {"name": "db", "key": "dsn"}}],
        "segment": {"tags": [{"name": TAG, "step": 50, "maxStep": 50}]},
        "lease": {"ttlSeconds": TTL},
    }


class SecretsOf:
    """The operator's `KubeApi`, as far as deletion needs it: one DSN for every Secret."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        return self.dsn


class Pool:
    """One pool under a private etcd prefix, its database, and ways to act on it."""

    def __init__(self, endpoint: str, dsn: str, tmp_path: Path, name: str = "p") -> None:
        self.endpoint = endpoint
        self.dsn = dsn
        self.tmp_path = tmp_path
        self.name = name
        self.prefix = f"/test-life/{uuid.uuid4()}"
        self.keys = pool_keys.PoolKeys(NAMESPACE, name, prefix=self.prefix)
        self.ref = f"{NAMESPACE}/{name}"

    def client(self) -> etcd.EtcdClient:
        return etcd.EtcdClient(etcd.EtcdSettings(endpoints=(self.endpoint,), timeout=2.0))

    async def apply(self, pool_spec: dict[str, Any]) -> pools.PoolConfig:
        """What the operator's reconcile does: write the config, provision the rows."""
        async with self.client() as c:
            config = (await pool_store.apply(c, self.keys, pool_spec)).config
        for dc in config.datacenters:
            await engines.provision(self.dsn, config, dc)
        return config

    async def config(self) -> pools.PoolConfig | None:
        async with self.client() as c:
            stored = await pool_store.get(c, self.keys)
        return stored.config if stored else None

    def operator(self, client: etcd.EtcdClient, **extra: Any) -> reconcile.Context:
        settings = operator_settings.OperatorSettings(
            etcd=dataclasses.replace(client.settings, prefix=self.prefix), probe_port=0
        )
        return reconcile.Context(
            settings=settings,
            etcd=client,
            kube=SecretsOf(self.dsn),  # type: ignore[arg-type]
            clock=SystemClock(),
            metrics=operator_metrics.OperatorMetrics.create(prometheus_client.CollectorRegistry()),
            postgres=pg_store.PostgresSettings(),
            **extra,
        )

    def serve_settings(self, pod: str) -> settings_mod.ServeSettings:
        return sidecars.cluster_settings(
            self.endpoint,
            pool=self.ref,
            prefix=self.prefix,
            datacenter="dc-a",
            data_dir=self.tmp_path / pod,
            pod=pod,
            database=database_config.DatabaseSettings(url=self.dsn),
        )

    @contextlib.asynccontextmanager
    async def sidecar(self, pod: str) -> AsyncIterator[Sidecar]:
        """A cluster-mode sidecar of the pool as stored now (as `nebula-id serve` starts)."""
        settings = self.serve_settings(pod)
        clock = SystemClock()
        async with contextlib.AsyncExitStack() as stack:
            config = await sidecars.load_pool_config(settings, clock=clock)
            shared = await stack.enter_async_context(
                sidecars.etcd_resources(settings, config, clock=clock)
            )
            snowflake = await stack.enter_async_context(
                worker.open_snowflake(
                    settings.pool_keys(),
                    config,
                    datacenter=settings.datacenter,
                    pod=settings.pod,
                    client=shared.client,
                    watch=shared.watch,
                    clock=clock,
                    registry=prometheus_client.CollectorRegistry(),
                )
            )
            segments = await stack.enter_async_context(
                sidecars.open_segments(
                    settings,
                    config,
                    client=shared.client,
                    watch=shared.watch,
                    clock=clock,
                    registry=prometheus_client.CollectorRegistry(),
                )
            )
            yield Sidecar(pod, config, snowflake, segments)

    def cli(self, *args: str, text: str | None = None) -> subprocess.CompletedProcess[str]:
        """The real `nebula-id pool` console script."""
        command = [str(Path(sys.executable).parent / "nebula-id"), "pool", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")} | {
            "NEBULA_ETCD_ENDPOINTS": self.endpoint,
            "NEBULA_ETCD_PREFIX": self.prefix,
        }
        return subprocess.run(
            command, input=text, capture_output=True, text=True, env=env, timeout=60, check=False
        )

    def cli_apply(self, pool_spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        doc = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": self.name, "namespace": NAMESPACE},
            "spec": copy.deepcopy(pool_spec),
        }
        return self.cli("apply", "-f", "-", "--database-url", self.dsn, text=yaml.safe_dump(doc))

    def cli_delete(self) -> subprocess.CompletedProcess[str]:
        return self.cli("delete", self.name, "-n", NAMESPACE)


class Sidecar:
    def __init__(
        self,
        pod: str,
        config: pools.PoolConfig,
        snowflake: Any,
        segments: postgres_source.ClusterSegments,
    ) -> None:
        self.pod = pod
        self.config = config
        self.snowflake = snowflake
        self.segments = segments


class Load:
    """Clients that ask every sidecar for IDs without pause and record all of them."""

    def __init__(self) -> None:
        self.snowflake: list[int] = []
        self.segment: list[int] = []
        self.refusals = Counter[str]()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.last_issue = 0.0

    def start(self, sidecar: Sidecar) -> None:
        self._tasks[sidecar.pod] = asyncio.create_task(self._run(sidecar))

    async def stop(self, sidecar: Sidecar | None = None) -> None:
        pods = [sidecar.pod] if sidecar else list(self._tasks)
        for pod in pods:
            task = self._tasks.pop(pod)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, sidecar: Sidecar) -> None:
        while True:
            try:
                self.snowflake.extend(sidecar.snowflake.next_ids(64))
                self.last_issue = time.monotonic()
            except errors.Unavailable as e:
                self.refusals[f"snowflake {e.reason}"] += 1
            try:
                self.segment.extend(await sidecar.segments.next_ids(TAG, 16))
                self.last_issue = time.monotonic()
            except errors.Unavailable as e:
                self.refusals[f"segment {e.reason}"] += 1
            await asyncio.sleep(0.002)

    def duplicates(self) -> tuple[int, int]:
        """How many Snowflake and Segment IDs were issued more than once."""
        return (
            len(self.snowflake) - len(set(self.snowflake)),
            len(self.segment) - len(set(self.segment)),
        )


def serving(sidecar: Sidecar) -> bool:
    return sidecar.snowflake.ready_reason() is None
