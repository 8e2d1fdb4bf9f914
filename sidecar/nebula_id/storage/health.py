"""Follow the datacenter health the operator publishes at `PoolKeys.health`.

The operator checks every datacenter's database and writes one JSON document
to etcd.  The sidecar polls it (one small read every few seconds, cheaper and
simpler to keep correct than a watch that must survive compactions) and hands
it to `core.failover`.  When etcd or the operator is away the health becomes
"unknown", and the failover falls back to the sidecar's own failure counts: the
data plane never waits for the control plane.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

from nebula_id import errors
from nebula_id.clock import Clock
from nebula_id.core import failover

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0


class _KeyValue(Protocol):
    @property
    def value(self) -> bytes: ...


class HealthReader(Protocol):
    """What this module needs of `nebula_id.etcd.client.EtcdClient`."""

    async def get(self, key: str, *, call_timeout: float | None = None) -> _KeyValue | None: ...


async def read_health(
    client: HealthReader, key: str, *, clock: Clock, max_age_s: float, call_timeout: float
) -> dict[str, tuple[bool, str] | None]:
    """One read of the health document, parsed; `CoordinationError` when etcd fails."""
    kv = await client.get(key, call_timeout=call_timeout)
    if kv is None:
        return {}
    try:
        doc = json.loads(kv.value)
    except (ValueError, UnicodeDecodeError):
        log.warning("the health document at %s is not JSON; ignoring it", key)
        return {}
    return failover.parse_health(doc, now_ms=clock.wall_ms(), max_age_s=max_age_s)


async def follow_health(
    client: HealthReader,
    key: str,
    policy: failover.Failover,
    *,
    clock: Clock,
    max_age_s: float,
    interval_s: float = DEFAULT_INTERVAL_S,
) -> None:
    """Feed the published health into `policy` until cancelled."""
    reachable = True
    while True:
        try:
            health = await read_health(
                client, key, clock=clock, max_age_s=max_age_s, call_timeout=interval_s
            )
        except errors.CoordinationError as e:
            if reachable:
                log.warning("cannot read datacenter health from etcd (%s); using failure counts", e)
            reachable = False
            health = {}
        else:
            reachable = True
        policy.observe_health(health)
        await asyncio.sleep(interval_s)
