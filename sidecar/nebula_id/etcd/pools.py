"""Read, validate-and-write, and delete a pool's config in etcd.

One writer for everyone: `nebula-id pool apply` and the operator both call `apply`, so
a spec is validated by `core.poolspec.parse_spec` against what is stored, and written with
a compare-and-swap on the stored mod_revision, so two concurrent writers can never lose
an update or slip an unsafe change past the check.

The config is written together with the pool's identity (`core.identity`), which
`delete` keeps as a tombstone: a pool created again under the same name is checked
against it, so it can neither change its layout, epoch or datacenter IDs while the
IDs of its earlier life are remembered, nor hand a retired datacenter ID out again.
Dropping the data is three steps (`fence`, wait, `finish_drop`), each fenced on the
caller's leadership when the caller passes a fence.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

from nebula_id import errors
from nebula_id.core import identity as identities
from nebula_id.core import jsontypes, poolspec
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.etcd import client as etcd

APPLY_ATTEMPTS = 5


@dataclasses.dataclass(frozen=True, slots=True)
class StoredPool:
    config: pools.PoolConfig
    mod_revision: int
    raw: bytes
    create_revision: int = 0
    """Changes when the pool is deleted and created again (not on an update)."""


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
    leases: tuple[int, ...] = ()
    """The leases the deleted claims were attached to (their holders may still serve)."""
    identity: identities.PoolIdentity | None = None
    """The tombstone left behind (None for a pool that never had an identity)."""
    identity_revision: int = 0


class NotLeader(errors.CoordinationError):
    """A fenced write failed because the caller no longer holds the leadership."""


def encode(config: pools.PoolConfig) -> bytes:
    return json.dumps(config.to_json(), sort_keys=True).encode("utf-8")


def decode(raw: bytes, keys: pool_keys.PoolKeys) -> pools.PoolConfig:
    try:
        doc = jsontypes.as_object(json.loads(raw))
        if doc is None:
            raise ValueError("not a JSON object")
        return poolspec.from_json(doc)
    except (ValueError, KeyError) as e:
        raise errors.ConfigError(f"the stored config at {keys.config} is unreadable: {e}") from e


async def get(client: etcd.EtcdClient, keys: pool_keys.PoolKeys) -> StoredPool | None:
    """The stored config of the pool, or None."""
    kv = await client.get(keys.config)
    if kv is None:
        return None
    return StoredPool(
        config=decode(kv.value, keys),
        mod_revision=kv.mod_revision,
        raw=kv.value,
        create_revision=kv.create_revision,
    )


def decode_identity(raw: bytes, keys: pool_keys.PoolKeys) -> identities.PoolIdentity:
    try:
        doc = jsontypes.as_object(json.loads(raw))
        if doc is None:
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise errors.ConfigError(f"the pool identity at {keys.identity} is unreadable: {e}") from e
    try:
        return identities.from_json(doc)
    except errors.ConfigError as e:
        raise errors.ConfigError(f"{keys.identity}: {e.message}") from e


def encode_identity(identity: identities.PoolIdentity) -> bytes:
    return json.dumps(identity.to_json(), sort_keys=True).encode("utf-8")


async def get_identity(
    client: etcd.EtcdClient, keys: pool_keys.PoolKeys
) -> tuple[identities.PoolIdentity | None, int]:
    """The stored identity and its mod_revision (None, 0 when there is none)."""
    kv = await client.get(keys.identity)
    if kv is None:
        return None, 0
    return decode_identity(kv.value, keys), kv.mod_revision


async def apply(
    client: etcd.EtcdClient,
    keys: pool_keys.PoolKeys,
    spec: Mapping[str, object],
    *,
    now_ms: int | None = None,
) -> ApplyResult:
    """Validate `spec` against the stored config (or the kept identity) and write both.

    Raises `errors.InvalidPool` for an invalid spec or an unsafe change (a different
    layout or epoch, a reused datacenter ID, also against a deleted pool whose data is
    kept), and `errors.CoordinationError` when etcd fails, the pool's data is being
    dropped, or other writers keep winning the race.
    """
    for _ in range(APPLY_ATTEMPTS):
        read = await client.txn([], [etcd.Get(keys.config), etcd.Get(keys.identity)])
        config_kvs, identity_kvs = read.ranges
        stored = None
        if config_kvs:
            kv = config_kvs[0]
            stored = StoredPool(
                decode(kv.value, keys), kv.mod_revision, kv.value, kv.create_revision
            )
        identity = decode_identity(identity_kvs[0].value, keys) if identity_kvs else None
        identity_revision = identity_kvs[0].mod_revision if identity_kvs else 0
        config = _config_for(spec, keys, stored, identity, now_ms=now_ms)
        raw = encode(config)
        if stored is not None and stored.raw == raw and identity is not None:
            return ApplyResult(config=config, created=False, changed=False, revision=0)
        new_identity = identities.of_config(config, identity, now_ms=now_ms or 0)
        revision = stored.mod_revision if stored else 0
        result = await client.txn(
            [
                etcd.Compare.mod_revision(keys.config, revision),
                etcd.Compare.mod_revision(keys.identity, identity_revision),
            ],
            [
                etcd.Put(keys.config, raw),
                etcd.Put(keys.identity, encode_identity(new_identity)),
            ],
        )
        if result.succeeded:
            return ApplyResult(
                config=config, created=stored is None, changed=True, revision=result.revision
            )
    raise errors.CoordinationError(
        f"the config of pool {keys.namespace}/{keys.name} kept changing under us "
        f"({APPLY_ATTEMPTS} attempts); try again"
    )


def _config_for(
    spec: Mapping[str, object],
    keys: pool_keys.PoolKeys,
    stored: StoredPool | None,
    identity: identities.PoolIdentity | None,
    *,
    now_ms: int | None,
) -> pools.PoolConfig:
    """The config to write: checked against the stored config, else the kept identity."""
    ref = f"{keys.namespace}/{keys.name}"
    previous: pools.PoolConfig | None = None
    if stored is not None:
        previous = stored.config
        generation = max(stored.config.generation, identity.generation if identity else 0, 1)
    elif identity is None:
        generation = 1
    elif identity.state == "dropping":
        raise errors.CoordinationError(
            f"pool {ref} was deleted and its data is being dropped (generation "
            f"{identity.generation}); it can be created again once the drop has finished"
        )
    else:
        generation = identity.generation + 1
        if identity.keeps_data:
            previous = identity.as_previous(keys.namespace, keys.name)
    try:
        config = poolspec.parse_spec(
            spec, namespace=keys.namespace, name=keys.name, previous=previous, now_ms=now_ms
        )
    except errors.InvalidPool as e:
        if stored is None and identity is not None and identity.keeps_data:
            raise identities.refusal(ref, identity, e.message) from e
        raise
    return dataclasses.replace(config, generation=generation)


async def delete(
    client: etcd.EtcdClient,
    keys: pool_keys.PoolKeys,
    *,
    fence: Sequence[etcd.Compare] = (),
    now_ms: int = 0,
    dropping: bool = False,
) -> DeleteResult:
    """Delete the config, the health record and the worker claims, in one transaction.

    The identity stays as a tombstone (state ``deleted``, or ``dropping`` when the data
    is to be dropped next), and so do the high-water marks (`clock/`) and the segment
    floors: a pool created again continues above every ID the old one issued.  Every
    claim's holder stops at its next keepalive tick, or at its lease deadline at the
    latest.  With a `fence`, nothing happens unless it holds (`NotLeader`).
    """
    for _ in range(APPLY_ATTEMPTS):
        identity, identity_revision = await get_identity(client, keys)
        stored = await get(client, keys)
        if identity is None and stored is not None:
            identity = identities.of_config(stored.config, None, now_ms=now_ms)
        tombstone = (
            identity.with_state("dropping" if dropping else "deleted", now_ms=now_ms)
            if identity is not None and identity.keeps_data
            else identity
        )
        writes: list[etcd.Op] = [
            etcd.Get(keys.config),
            etcd.Get(keys.workers_prefix, prefix=True),
            etcd.Delete(keys.config),
            etcd.Delete(keys.health),
            etcd.Delete(keys.workers_prefix, prefix=True),
        ]
        if tombstone is not None and tombstone != identity:
            writes.append(etcd.Put(keys.identity, encode_identity(tombstone)))
        result = await client.txn(
            [*fence, etcd.Compare.mod_revision(keys.identity, identity_revision)], writes
        )
        if result.succeeded:
            config_kvs, claim_kvs = result.ranges[0], result.ranges[1]
            return DeleteResult(
                config_deleted=bool(config_kvs),
                claims_deleted=len(claim_kvs),
                leases=tuple(sorted({kv.lease for kv in claim_kvs if kv.lease})),
                identity=tombstone,
                identity_revision=result.revision if tombstone != identity else identity_revision,
            )
        await _check_fence(client, fence)
    raise errors.CoordinationError(f"the identity of pool {keys.root} kept changing under us")


async def claim_leases(client: etcd.EtcdClient, keys: pool_keys.PoolKeys) -> tuple[int, ...]:
    """The leases of the worker claims that exist now."""
    held = await client.range(keys.workers_prefix, prefix=True)
    return tuple(sorted({kv.lease for kv in held.kvs if kv.lease}))


async def leases_alive(client: etcd.EtcdClient, leases: Sequence[int]) -> list[int]:
    """Those of `leases` etcd still knows (a revoked or expired lease reports TTL -1)."""
    alive = []
    for lease in leases:
        info = await client.time_to_live(lease)
        if info.ttl >= 0:
            alive.append(lease)
    return alive


async def finish_drop(
    client: etcd.EtcdClient,
    keys: pool_keys.PoolKeys,
    identity: identities.PoolIdentity,
    identity_revision: int,
    *,
    fence: Sequence[etcd.Compare] = (),
    now_ms: int = 0,
) -> int:
    """Delete the marks and segment floors and mark the identity ``dropped``.

    Fenced on the identity being exactly the ``dropping`` one of this drop (so a drop
    that was overtaken does nothing), and on `fence`.  Returns the new identity's
    mod_revision.  The generation stays, so the next life gets a higher one.
    """
    dropped = identity.with_state("dropped", now_ms=now_ms)
    result = await client.txn(
        [*fence, etcd.Compare.mod_revision(keys.identity, identity_revision)],
        [
            etcd.Delete(keys.clock_prefix, prefix=True),
            etcd.Delete(keys.floors_prefix, prefix=True),
            etcd.Put(keys.identity, encode_identity(dropped)),
        ],
    )
    if not result.succeeded:
        await _check_fence(client, fence)
        raise errors.CoordinationError(
            f"the identity of pool {keys.root} changed while its data was dropped; not dropping"
        )
    return result.revision


async def _check_fence(client: etcd.EtcdClient, fence: Sequence[etcd.Compare]) -> None:
    """Raise `NotLeader` when `fence` does not hold now."""
    if not fence:
        return
    result = await client.txn(list(fence), [], [])
    if not result.succeeded:
        raise NotLeader("this operator is no longer the leader; the write was not made")
