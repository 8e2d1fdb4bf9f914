"""One reconcile of a pool's spec, and its deletion: the operator's real work.

Order matters for safety.  The config goes to etcd first, through
`nebula_id.etcd.pools.apply` (the same validation and compare-and-swap as
`nebula-id pool apply`), because that is where datacenter IDs are assigned and
must be remembered.  Then each datacenter's database is provisioned with
`nebula_id.storage.engines.provision` (PostgreSQL or MySQL, as the DSN says),
which is idempotent and never drops or lowers a counter.  Each step ends in a
`status.Check`; the first error is kept so the handler can map it to kopf once
(`failures`).

Deletion removes the config, health and claims from etcd and keeps the segment
rows, the clock records and the pool's identity (a tombstone): a pool created again
under the same name continues above every ID the old one issued, or is refused when
its layout, epoch or datacenter IDs differ.  Only the explicit annotation
``nebula-id.io/drop-data-on-delete: "true"`` drops them, in three steps: fence (the
config and claims go, the identity turns ``dropping``, so no holder can claim again),
wait (every claim's lease revoked and a full lease TTL passed, so every holder has
stopped at its own deadline), drop (rows of this generation or earlier, then marks
and floors, the identity turning ``dropped``).  Every etcd write of a deletion is
fenced on this replica's leadership in the same transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence

from nebula_id import errors
from nebula_id.clock import Clock
from nebula_id.config import operator as operator_settings
from nebula_id.core import identity as identities
from nebula_id.core import pool as pools
from nebula_id.core import poolspec
from nebula_id.core.keys import PoolKeys
from nebula_id.etcd import client as etcd
from nebula_id.etcd import pools as etcd_pools
from nebula_id.etcd.client import Compare
from nebula_id.storage import engines, postgres
from nebula_id_operator import advice, etcd_access, kube, status
from nebula_id_operator import metrics as operator_metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """What every handler needs, built once at start-up and passed through kopf's memo."""

    settings: operator_settings.OperatorSettings
    etcd: etcd.EtcdClient
    kube: kube.KubeApi
    clock: Clock
    metrics: operator_metrics.OperatorMetrics
    postgres: postgres.PostgresSettings
    fence: Callable[[], Sequence[Compare]] = lambda: ()
    """The etcd conditions that prove this replica leads (`LeaderElection.fence`)."""
    poll_seconds: float = 0.5
    """How often a drop re-checks that every claim's lease has gone."""

    def now(self) -> str:
        return status.rfc3339(self.clock.wall_ms())


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    config: pools.PoolConfig | None
    etcd: status.Check
    database: status.Check
    revision: int | None = None
    error: errors.NebulaIdError | None = None
    changed: bool = False


async def read_dsn(ctx: Context, namespace: str, dc: pools.Datacenter) -> str:
    ref = dc.database_secret_ref
    if ref is None:
        raise errors.ConfigError(f"datacenter {dc.name!r} has no databaseSecretRef")
    dsn = await ctx.kube.read_secret_key(namespace, ref.name, ref.key)
    if not dsn:
        raise kube.SecretNotFound(f"key {ref.key!r} of Secret {namespace}/{ref.name} is empty")
    return dsn


def databases_of(config: pools.PoolConfig) -> list[pools.Datacenter]:
    """The datacenters whose database needs the segment table: only when there are tags."""
    if not config.tags:
        return []
    return [dc for dc in config.datacenters if dc.database_secret_ref is not None]


def failed(reason: str, message: str, error: errors.NebulaIdError) -> status.Check:
    """A failed check, permanent exactly when retrying `error` unchanged cannot help."""
    return status.Check.failed(reason, message, permanent=not error.transient)


async def write_config(
    ctx: Context, namespace: str, name: str, spec: Mapping[str, object]
) -> tuple[etcd_pools.ApplyResult | None, status.Check, errors.NebulaIdError | None]:
    keys = ctx.settings.keys(namespace, name)
    try:
        result = await etcd_pools.apply(ctx.etcd, keys, spec, now_ms=ctx.clock.wall_ms())
    except identities.RecreationRefused as e:
        # The pool was deleted, its IDs are remembered, and this spec could repeat them.
        return None, failed("RecreationRefused", e.message, e), e
    except errors.InvalidPool as e:
        message = advice.with_next_step(
            e.message, advice.next_step("InvalidSpec", namespace=namespace)
        )
        return None, failed("InvalidSpec", message, e), e
    except errors.ConfigError as e:
        message = advice.with_next_step(
            e.message, advice.next_step("StoredConfigUnreadable", namespace=namespace)
        )
        return None, failed("StoredConfigUnreadable", message, e), e
    except errors.CoordinationError as e:
        message = advice.with_next_step(
            f"etcd cannot be reached: {e.message}",
            advice.next_step("EtcdUnavailable", namespace=namespace),
        )
        return None, failed("EtcdUnavailable", message, e), e
    verb = "written" if result.changed else "up to date"
    return result, status.Check.passed("ConfigWritten", f"config {verb} at {keys.config}"), None


async def provision_databases(
    ctx: Context, namespace: str, config: pools.PoolConfig
) -> tuple[status.Check, errors.NebulaIdError | None]:
    targets = databases_of(config)
    if not targets:
        return status.Check.passed("NotRequired", "the pool has no segment tags"), None

    async def one(dc: pools.Datacenter) -> tuple[str, errors.NebulaIdError] | None:
        try:
            dsn = await read_dsn(ctx, namespace, dc)
            done = await engines.provision(dsn, config, dc, settings=ctx.postgres)
            for warning in done.warnings:
                log.warning("pool %s, datacenter %s: %s", config.ref, dc.name, warning)
        except kube.SecretNotFound as e:
            return "SecretNotFound", e
        except kube.KubeUnavailable as e:
            return "KubernetesUnavailable", e
        except errors.StorageError as e:
            return "DatabaseUnavailable", e
        except errors.InvalidPool as e:
            return "DatabaseConflict", e
        return None

    results = await asyncio.gather(*(one(dc) for dc in targets))
    failures = [(dc, r) for dc, r in zip(targets, results, strict=True) if r is not None]
    if not failures:
        names = ", ".join(dc.name for dc in targets)
        return status.Check.passed("Provisioned", f"segment tables ready in {names}"), None
    message = " ".join(
        advice.with_next_step(
            f"Datacenter {dc.name}: {error.message}",
            advice.next_step(reason, namespace=namespace, dc=dc),
        )
        for dc, (reason, error) in failures
    )
    transient = [r for _, r in failures if r[1].transient]
    reason, error = transient[0] if transient else failures[0][1]
    return status.Check.failed(reason, message, permanent=not transient), error


async def grant_access(
    ctx: Context, namespace: str, name: str, *, uid: str | None
) -> tuple[status.Check | None, errors.NebulaIdError | None]:
    """The pool's own etcd user and Secret, when the operator hands them out."""
    if not ctx.settings.etcd_pool_users:
        return None, None
    keys = ctx.settings.keys(namespace, name)
    try:
        secret = await etcd_access.ensure(ctx.etcd, ctx.kube, keys, uid=uid)
    except kube.KubeUnavailable as e:
        message = advice.with_next_step(
            f"cannot write the pool's etcd credential Secret: {e.message}",
            advice.next_step("KubernetesUnavailable", namespace=namespace),
        )
        return failed("KubernetesUnavailable", message, e), e
    except errors.CoordinationError as e:
        message = advice.with_next_step(
            f"cannot create the pool's etcd user: {e.message}",
            advice.next_step("EtcdUnavailable", namespace=namespace),
        )
        return failed("EtcdUnavailable", message, e), e
    return status.Check.passed("ConfigWritten", f"etcd user for the pool in Secret {secret}"), None


async def reconcile(
    ctx: Context, namespace: str, name: str, spec: Mapping[str, object], *, uid: str | None = None
) -> Outcome:
    """Write the config, then provision the databases; never raises our errors."""
    result, etcd_check, error = await write_config(ctx, namespace, name, spec)
    if result is None:
        waiting = status.Check.unknown("WaitingForConfig", "the config is not in etcd yet")
        return Outcome(config=None, etcd=etcd_check, database=waiting, error=error)
    access_check, access_error = await grant_access(ctx, namespace, name, uid=uid)
    if access_check is not None and access_error is not None:
        waiting = status.Check.unknown("WaitingForConfig", "the pool's etcd user is not ready")
        return Outcome(
            config=result.config, etcd=access_check, database=waiting, error=access_error
        )
    database, db_error = await provision_databases(ctx, namespace, result.config)
    return Outcome(
        config=result.config,
        etcd=etcd_check,
        database=database,
        revision=result.revision or None,
        error=db_error,
        changed=result.changed,
    )


async def drop_rows(
    ctx: Context, namespace: str, config: pools.PoolConfig, generation: int
) -> list[str]:
    """Delete the pool's segment rows up to `generation`; returns what could not be dropped."""
    skipped: list[str] = []
    for dc in [dc for dc in config.datacenters if dc.database_secret_ref is not None]:
        try:
            dsn = await read_dsn(ctx, namespace, dc)
        except kube.SecretNotFound as e:
            skipped.append(f"{dc.name}: {e.message}")
            continue
        deleted = await engines.drop_rows(dsn, config.ref, generation, settings=ctx.postgres)
        log.info("pool %s: %d segment rows dropped in %s", config.ref, deleted, dc.name)
    return skipped


async def wait_for_holders(
    ctx: Context, keys: PoolKeys, leases: Sequence[int], ttl_seconds: int
) -> None:
    """Return once no holder of the pool can still issue an ID.

    Every lease of a deleted claim is revoked; a holder's own deadline is at most one
    TTL after its last keepalive was sent, which was before the revocation, so one
    TTL (plus the slack of a slow clock) after it no holder serves.  New claims cannot
    appear (the claim transaction needs the config), but they are looked for anyway.
    """
    pending = set(leases)
    revoked: set[int] = set()
    deadline = ctx.clock.monotonic()
    while True:
        pending |= set(await etcd_pools.claim_leases(ctx.etcd, keys))
        for lease in sorted(pending - revoked):
            await ctx.etcd.revoke(lease)
            revoked.add(lease)
            deadline = ctx.clock.monotonic() + ttl_seconds + 1.0
        pending = set(await etcd_pools.leases_alive(ctx.etcd, sorted(pending)))
        if (
            not pending
            and ctx.clock.monotonic() >= deadline
            and not await etcd_pools.claim_leases(ctx.etcd, keys)
        ):
            return
        await asyncio.sleep(ctx.poll_seconds)


async def delete(
    ctx: Context,
    namespace: str,
    name: str,
    *,
    drop: bool,
    spec: Mapping[str, object] | None = None,
) -> tuple[etcd_pools.DeleteResult, list[str]]:
    """Remove the pool from etcd (and its data, when asked); raises our errors to retry.

    `spec` (the resource's) names the datacenters' Secrets when the config is already
    gone, as on a retry of an interrupted drop.
    """
    keys = ctx.settings.keys(namespace, name)
    stored = await etcd_pools.get(ctx.etcd, keys)
    result = await etcd_pools.delete(
        ctx.etcd, keys, fence=ctx.fence(), now_ms=ctx.clock.wall_ms(), dropping=drop
    )
    if ctx.settings.etcd_pool_users:
        await etcd_access.remove(ctx.etcd, keys)
    identity = result.identity
    if not drop or identity is None or identity.state != "dropping":
        return result, []
    config = stored.config if stored is not None else _config_of_spec(namespace, name, spec)
    await wait_for_holders(ctx, keys, result.leases, identity.lease_ttl_seconds)
    skipped: list[str] = []
    if config is not None:
        skipped = await drop_rows(ctx, namespace, config, identity.generation)
    await etcd_pools.finish_drop(
        ctx.etcd,
        keys,
        identity,
        result.identity_revision,
        fence=ctx.fence(),
        now_ms=ctx.clock.wall_ms(),
    )
    return result, skipped


def _config_of_spec(
    namespace: str, name: str, spec: Mapping[str, object] | None
) -> pools.PoolConfig | None:
    if spec is None:
        return None
    try:
        return poolspec.parse_spec(spec, namespace=namespace, name=name)
    except errors.InvalidPool:
        return None
