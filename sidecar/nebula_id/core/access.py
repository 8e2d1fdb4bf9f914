"""Who may touch which etcd keys: the per-pool role that a pool's sidecars log in with.

etcd holds every pool of the cluster (and the operator's leader key) under one
prefix.  A sidecar of pool A must not read or change pool B, nor the leader key,
so the operator gives each pool its own etcd user and role, with exactly the
keys its sidecars use:

  read        pools/{ns}/{name}/config     the pool's configuration
  read        pools/{ns}/{name}/health     the datacenters' health
  read        pools/{ns}/{name}/identity   the pool's identity record
  read+write  pools/{ns}/{name}/workers/   worker-ID claims
  read+write  pools/{ns}/{name}/clock/     high-water marks
  read+write  pools/{ns}/{name}/floors/    segment floors

Pure: the names and the permission list, nothing that talks to etcd.
"""

from __future__ import annotations

import dataclasses

from nebula_id.core import keys as pool_keys

READ = "READ"
WRITE = "WRITE"
READWRITE = "READWRITE"

# Bandit B105 accepted: a Secret's name, not a password
SECRET_PREFIX = "nebula-id-etcd-"  # nosec B105
"""The per-pool credential's Secret, in the pool's namespace: ``nebula-id-etcd-{pool}``."""
# Bandit B105 accepted: a key's name in the Secret
SECRET_USERNAME_KEY = "username"  # nosec B105
# Bandit B105 accepted: a key's name in the Secret
SECRET_PASSWORD_KEY = "password"  # nosec B105


@dataclasses.dataclass(frozen=True, slots=True)
class Permission:
    """One etcd role permission: READ, WRITE or READWRITE on a key or a key range."""

    kind: str
    key: str
    range_end: str = ""
    """Empty: `key` alone; otherwise the half-open range [key, range_end)."""


def prefix_range_end(prefix: str) -> str:
    """The end of the range holding every key that starts with `prefix` (ASCII keys)."""
    if not prefix:
        raise ValueError("an empty prefix has no range end")
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _prefix(kind: str, prefix: str) -> Permission:
    return Permission(kind=kind, key=prefix, range_end=prefix_range_end(prefix))


def principal(keys: pool_keys.PoolKeys) -> str:
    """The etcd user and role name of a pool's sidecars (unique per keyspace prefix).

    Namespaces and pool names are DNS labels, so the dots cannot be confused.
    """
    return f"{keys.prefix.strip('/') or 'root'}.pool.{keys.namespace}.{keys.name}"


def secret_name(pool_name: str) -> str:
    """The Secret in the pool's namespace that holds its sidecars' etcd credential."""
    return f"{SECRET_PREFIX}{pool_name}"


def sidecar_permissions(keys: pool_keys.PoolKeys) -> tuple[Permission, ...]:
    """Exactly what a pool's sidecars need, and nothing of any other pool."""
    root = keys.root
    return (
        Permission(kind=READ, key=keys.config),
        Permission(kind=READ, key=keys.health),
        Permission(kind=READ, key=f"{root}/identity"),
        _prefix(READWRITE, keys.workers_prefix),
        _prefix(READWRITE, keys.clock_prefix),
        _prefix(READWRITE, f"{root}/floors/"),
    )
