"""One entry point per database operation, whichever engine a DSN names.

The DSN's scheme picks the engine: ``postgresql://`` or ``postgres://`` for
PostgreSQL (asyncpg), ``mysql://`` or ``mariadb://`` for MySQL and MariaDB
(asyncmy).  Callers (the sidecar, the operator, `nebula-id pool`) never
branch on the engine themselves, so every SQL statement stays in this package.
"""

from __future__ import annotations

from typing import Protocol

from nebula_id import errors
from nebula_id.core import pool as pools
from nebula_id.core import segment
from nebula_id.storage import mysql, postgres

POSTGRES_SCHEMES = ("postgresql", "postgres")

DatabaseSettings = postgres.PostgresSettings
"""Timeouts and pool size; the same fields govern both engines."""

ProvisionResult = postgres.ProvisionResult


class SegmentDatabase(segment.SegmentStore, Protocol):
    """What the sidecar and the import need of one datacenter's store, on any engine."""

    @property
    def datacenter(self) -> str: ...

    @property
    def base(self) -> int: ...

    @property
    def limit(self) -> int: ...

    async def raise_floor(self, tag: str, counter: int) -> tuple[int, int]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def engine_of(dsn: str) -> str:
    """``"postgresql"`` or ``"mysql"``; `ConfigError` for any other scheme.

    A DSN without a scheme goes to asyncpg (libpq's ``key=value`` form).
    """
    scheme = dsn.partition("://")[0].lower() if "://" in dsn else ""
    if scheme in ("", *POSTGRES_SCHEMES):
        return "postgresql"
    if mysql.is_mysql(dsn):
        return "mysql"
    raise errors.ConfigError(
        f"database URL {postgres.redact(dsn)!r} must start with postgresql://, postgres://, "
        "mysql:// or mariadb://"
    )


def open_store(
    dsn: str,
    *,
    pool: pools.PoolConfig,
    datacenter: pools.Datacenter,
    settings: DatabaseSettings | None = None,
) -> SegmentDatabase:
    """The segment store of one datacenter; it connects lazily, on first use."""
    if engine_of(dsn) == "mysql":
        return mysql.MySQLSegmentStore(dsn, pool=pool, datacenter=datacenter, settings=settings)
    return postgres.PostgresSegmentStore(dsn, pool=pool, datacenter=datacenter, settings=settings)


async def provision(
    dsn: str,
    pool: pools.PoolConfig,
    datacenter: pools.Datacenter,
    *,
    settings: DatabaseSettings | None = None,
) -> ProvisionResult:
    """Create the segment table and the pool's tag rows if missing (idempotent)."""
    if engine_of(dsn) == "mysql":
        return await mysql.provision(dsn, pool, datacenter, settings=settings)
    return await postgres.provision(dsn, pool, datacenter, settings=settings)


async def ping(dsn: str, *, timeout_s: float) -> None:
    """One round trip; `StorageError` when the database does not answer."""
    if engine_of(dsn) == "mysql":
        await mysql.ping(dsn, timeout_s=timeout_s)
    else:
        await postgres.ping(dsn, timeout_s=timeout_s)


async def delete_pool(dsn: str, pool_ref: str, *, timeout_s: float) -> int:
    """Delete a pool's segment rows; how many there were."""
    if engine_of(dsn) == "mysql":
        return await mysql.delete_pool(dsn, pool_ref, timeout_s=timeout_s)
    return await postgres.delete_pool(dsn, pool_ref, timeout_s=timeout_s)
