"""Worker-ID claims: count them into status, annotate their pods, reclaim stale ones.

A sidecar claims `pools/{ns}/{name}/workers/{dcId}/{worker}` with a key attached
to its etcd lease (see `nebula_id.etcd.claims`).  The operator only reads them,
with one exception: a claim record whose lease is gone (written without a lease,
or left behind by a restore) blocks a worker ID forever, so it is deleted with a
compare on its mod_revision, which cannot remove a claim made again meanwhile.

Each pod holding a claim gets the annotation ``nebula-id.io/worker-id:
"<datacenter name>/<worker>"`` (for example ``dc-a/3``), removed again when
the claim goes away while the pod lives on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping, Sequence

from nebula_id.core import crd
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.etcd import client as etcd
from nebula_id_operator import kube

log = logging.getLogger(__name__)

PodRef = tuple[str, str]
"""(namespace, pod name)"""


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    key: str
    datacenter_id: int
    worker: int
    lease: int
    mod_revision: int
    pod: str | None
    namespace: str | None


def parse_claim(
    keys: pool_keys.PoolKeys, key: str, value: bytes, *, lease: int, mod_revision: int
) -> Claim | None:
    """A claim key and value, or None for a key that is not `workers/{dc}/{worker}`."""
    tail = key.removeprefix(keys.workers_prefix).split("/")
    if len(tail) != 2 or not all(part.isdigit() for part in tail):
        return None
    try:
        loaded: object = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        loaded = None
    doc = loaded if isinstance(loaded, dict) else {}
    pod = doc.get("pod")
    namespace = doc.get("namespace")
    return Claim(
        key=key,
        datacenter_id=int(tail[0]),
        worker=int(tail[1]),
        lease=lease,
        mod_revision=mod_revision,
        pod=pod if isinstance(pod, str) and pod else None,
        namespace=namespace if isinstance(namespace, str) and namespace else None,
    )


def datacenter_names(config: pools.PoolConfig) -> dict[int, str]:
    return {dc.id: dc.name for dc in config.datacenters}


def count_active(config: pools.PoolConfig, claims: Iterable[Claim]) -> dict[str, int]:
    """Live claims per datacenter name (claims of unknown datacenter IDs are not counted)."""
    names = datacenter_names(config)
    counts = {dc.name: 0 for dc in config.datacenters}
    for claim in claims:
        name = names.get(claim.datacenter_id)
        if name is not None:
            counts[name] += 1
    return counts


def annotation_value(config: pools.PoolConfig, claim: Claim) -> str:
    name = datacenter_names(config).get(claim.datacenter_id, str(claim.datacenter_id))
    return f"{name}/{claim.worker}"


def desired_annotations(
    config: pools.PoolConfig, claims: Iterable[Claim], *, pool_namespace: str
) -> dict[PodRef, str]:
    """The worker-id annotation each claiming pod should carry.

    Only pods in the pool's own namespace: a claim is written by a sidecar, and a
    sidecar must not get the operator to annotate pods of another namespace.
    """
    wanted: dict[PodRef, str] = {}
    for claim in sorted(claims, key=lambda c: (c.datacenter_id, c.worker)):
        if claim.pod is None or (claim.namespace or pool_namespace) != pool_namespace:
            continue
        ref = (pool_namespace, claim.pod)
        wanted.setdefault(ref, annotation_value(config, claim))
    return wanted


def annotation_changes(
    applied: Mapping[PodRef, str], wanted: Mapping[PodRef, str]
) -> dict[PodRef, str | None]:
    """What to patch: new or changed values, and None for pods that lost their claim."""
    changes: dict[PodRef, str | None] = {
        ref: value for ref, value in wanted.items() if applied.get(ref) != value
    }
    for ref in applied:
        if ref not in wanted:
            changes[ref] = None
    return changes


def stale(claims: Sequence[Claim], live_leases: set[int]) -> list[Claim]:
    """Claims that no live lease holds: they would block their worker ID forever."""
    return [c for c in claims if c.lease == 0 or c.lease not in live_leases]


# --- I/O ------------------------------------------------------------------------------


async def read_claims(client: etcd.EtcdClient, keys: pool_keys.PoolKeys) -> tuple[list[Claim], int]:
    """The claims, and the store revision the read saw (to watch from)."""
    result = await client.range(keys.workers_prefix, prefix=True)
    claims = []
    for kv in result.kvs:
        claim = parse_claim(keys, kv.key, kv.value, lease=kv.lease, mod_revision=kv.mod_revision)
        if claim is not None:
            claims.append(claim)
    return claims, result.revision


async def wait_for_change(
    client: etcd.EtcdClient, keys: pool_keys.PoolKeys, *, after_revision: int, timeout_s: float
) -> bool:
    """Block until a claim changes after `after_revision` (True) or `timeout_s` passes (False).

    A watch, so a claim shows in status within moments; the timeout makes the
    caller re-read now and then anyway (a missed event costs one interval at most).
    """
    events = client.watch(keys.workers_prefix, prefix=True, start_revision=after_revision + 1)
    try:
        async with asyncio.timeout(timeout_s):
            await anext(events)
    except (TimeoutError, StopAsyncIteration):
        return False
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return True


async def reclaim_stale(
    client: etcd.EtcdClient, claims: Sequence[Claim], *, fence: Sequence[etcd.Compare] = ()
) -> list[Claim]:
    """Delete claims whose lease is gone (fenced on `fence`); returns the ones still live."""
    leases = {c.lease for c in claims if c.lease}
    live: set[int] = set()
    for lease in leases:
        info = await client.time_to_live(lease)
        if info.ttl >= 0:  # -1 means gone; 0 is a live lease at the end of its TTL
            live.add(lease)
    dead = stale(claims, live)
    for claim in dead:
        result = await client.txn(
            [*fence, etcd.Compare.mod_revision(claim.key, claim.mod_revision)],
            [etcd.Delete(claim.key)],
        )
        if result.succeeded:
            log.info("reclaimed stale worker claim %s (lease %x is gone)", claim.key, claim.lease)
    dead_keys = {c.key for c in dead}
    return [c for c in claims if c.key not in dead_keys]


async def apply_annotations(
    api: kube.KubeApi, changes: Mapping[PodRef, str | None]
) -> dict[PodRef, str | None]:
    """Patch the pods; returns what was applied (pods that are gone count as cleared)."""
    done: dict[PodRef, str | None] = {}
    for (namespace, pod), value in changes.items():
        try:
            await api.annotate_pod(namespace, pod, {crd.WORKER_ANNOTATION: value})
        except kube.KubeUnavailable as e:
            log.warning("cannot annotate pod %s/%s: %s", namespace, pod, e)
            continue
        done[(namespace, pod)] = value
    return done


@dataclasses.dataclass(frozen=True, slots=True)
class WorkersView:
    active: int
    by_datacenter: dict[str, int]
    annotations: dict[PodRef, str]
    revision: int
    """The etcd revision the claims were read at."""


async def sync(
    client: etcd.EtcdClient,
    api: kube.KubeApi,
    keys: pool_keys.PoolKeys,
    config: pools.PoolConfig,
    applied: Mapping[PodRef, str],
    *,
    fence: Sequence[etcd.Compare] = (),
) -> WorkersView:
    """One pass: reclaim stale claims, count the rest, bring pod annotations up to date."""
    found, revision = await read_claims(client, keys)
    claims = await reclaim_stale(client, found, fence=fence)
    by_dc = count_active(config, claims)
    wanted = desired_annotations(config, claims, pool_namespace=keys.namespace)
    done = await apply_annotations(api, annotation_changes(applied, wanted))
    now_applied = {ref: v for ref, v in applied.items() if ref in wanted}
    for ref, value in done.items():
        if value is None:
            now_applied.pop(ref, None)
        else:
            now_applied[ref] = value
    return WorkersView(
        active=sum(by_dc.values()),
        by_datacenter=by_dc,
        annotations=now_applied,
        revision=revision,
    )
