"""Check each datacenter's database and publish the result for the sidecars.

The sidecars' segment failover (`nebula_id.core.failover`) reads the document
at `PoolKeys.health` and prefers healthy datacenters; a stale document counts
as unknown, so a stopped operator never makes a datacenter look sick.  The
check is a real round trip (`SELECT 1`) with a timeout, made only by the
leader, from a kopf timer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence

from nebula_id import errors
from nebula_id.core import health as health_doc
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.etcd import client as etcd
from nebula_id.storage import engines
from nebula_id_operator import status

NO_DATABASE = "no database configured"

DsnReader = Callable[[pools.Datacenter], Awaitable[str]]


async def check_database(dsn: str, *, timeout_s: float) -> tuple[bool, str]:
    """(healthy, reason) after one `SELECT 1`."""
    try:
        await engines.ping(dsn, timeout_s=timeout_s)
    except errors.NebulaIdError as e:
        return False, e.message[:500]
    return True, "ok"


async def check_pool(
    config: pools.PoolConfig, read_dsn: DsnReader, *, timeout_s: float, now: str
) -> list[status.DatacenterHealth]:
    """The health of every datacenter of the pool, checked concurrently."""

    async def one(dc: pools.Datacenter) -> status.DatacenterHealth:
        if dc.database_secret_ref is None:
            return status.DatacenterHealth(dc.name, True, NO_DATABASE, now)
        try:
            dsn = await read_dsn(dc)
        except errors.NebulaIdError as e:
            return status.DatacenterHealth(dc.name, False, e.message, now)
        healthy, reason = await check_database(dsn, timeout_s=timeout_s)
        return status.DatacenterHealth(dc.name, healthy, reason, now)

    return list(await asyncio.gather(*(one(dc) for dc in config.datacenters)))


async def publish(
    client: etcd.EtcdClient,
    keys: pool_keys.PoolKeys,
    health: Sequence[status.DatacenterHealth],
    *,
    now: str,
) -> None:
    document = health_doc.build(health, updated_at=now)
    await client.put(keys.health, json.dumps(document, sort_keys=True).encode("utf-8"))
