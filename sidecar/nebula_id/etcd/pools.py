"""Read, validate-and-write, and delete a pool's config in etcd.

One writer for everyone: `nebula-id pool apply` and the operator both call `apply`, so
a spec is validated by `core.pool.parse_spec` against what is stored, and written with
a compare-and-swap on the stored mod_revision, so two concurrent writers can never lose
an update or slip an unsafe change past the check.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from nebula_id import errors
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.etcd import client as etcd

APPLY_ATTEMPTS = 5


@dataclasses.dataclass(frozen=True, slots=True)
class StoredPool:
    config: pools.PoolConfig
    mod_revision: int
    raw: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class ApplyResult:
    config: pools.PoolConfig
    created: bool
    changed: bool
    revision: int


@dataclasses.dataclass(frozen=True, slots=True)
class DeleteResult:
    config_deleted: bool
    claims_deleted: int


def encode(config: pools.PoolConfig) -> bytes:
    return json.dumps(config.to_json(), sort_keys=True).encode("utf-8")


def decode(raw: bytes, keys: pool_keys.PoolKeys) -> pools.PoolConfig:
    try:
        doc: Any = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return pools.from_json(doc)
    except (ValueError, KeyError) as e:
        raise errors.ConfigError(f"the stored config at {keys.config} is unreadable: {e}") from e


async def get(client: etcd.EtcdClient, keys: pool_keys.PoolKeys) -> StoredPool | None:
    """The stored config of the pool, or None."""
    kv = await client.get(keys.config)
    if kv is None:
        return None
    return StoredPool(config=decode(kv.value, keys), mod_revision=kv.mod_revision, raw=kv.value)


async def apply(
    client: etcd.EtcdClient,
    keys: pool_keys.PoolKeys,
    spec: Mapping[str, Any],
    *,
    now_ms: int | None = None,
) -> ApplyResult:
    """Validate `spec` against the stored config and write it.

    Raises `errors.InvalidPool` for an invalid spec or an unsafe change (a different
    layout or epoch, a reused datacenter ID), and `errors.CoordinationError` when etcd
    fails or other writers keep winning the race.
    """
    for _ in range(APPLY_ATTEMPTS):
        stored = await get(client, keys)
        previous = stored.config if stored else None
        config = pools.parse_spec(
            spec, namespace=keys.namespace, name=keys.name, previous=previous, now_ms=now_ms
        )
        raw = encode(config)
        if stored is not None and stored.raw == raw:
            return ApplyResult(config=config, created=False, changed=False, revision=0)
        revision = stored.mod_revision if stored else 0
        result = await client.txn(
            [etcd.Compare.mod_revision(keys.config, revision)], [etcd.Put(keys.config, raw)]
        )
        if result.succeeded:
            return ApplyResult(
                config=config, created=stored is None, changed=True, revision=result.revision
            )
    raise errors.CoordinationError(
        f"the config of pool {keys.namespace}/{keys.name} kept changing under us "
        f"({APPLY_ATTEMPTS} attempts); try again"
    )


async def delete(client: etcd.EtcdClient, keys: pool_keys.PoolKeys) -> DeleteResult:
    """Delete the config, the health record and the worker claims, in one transaction.

    The high-water marks (`clock/`) stay: if the pool is created again with the same
    layout, new holders still wait past every timestamp the old pool issued.
    """
    result = await client.txn(
        [],
        [
            etcd.Get(keys.config),
            etcd.Get(keys.workers_prefix, prefix=True),
            etcd.Delete(keys.config),
            etcd.Delete(keys.health),
            etcd.Delete(keys.workers_prefix, prefix=True),
        ],
    )
    config_kvs, claim_kvs = result.ranges
    return DeleteResult(config_deleted=bool(config_kvs), claims_deleted=len(claim_kvs))
