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

    @property
    def datacenter_id(self) -> int: ...

    async def raise_row(self, tag: str, max_id: int) -> None: ...

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
        f"database URL {postgres.where(dsn)!r} must start with postgresql://, postgres://, "
        "mysql:// or mariadb://"
    )


def open_store(
    dsn: str,
    *,
    pool: pools.PoolConfig,
    datacenter: pools.Datacenter,
    settings: DatabaseSettings | None = None,
    create_rows: bool = True,
) -> SegmentDatabase:
    """The segment store of one datacenter; it connects lazily, on first use.

    With ``create_rows=False`` a missing row raises `floored.RowMissing` instead of
    being created at 1 (cluster mode: only provisioning creates rows).
    """
    if engine_of(dsn) == "mysql":
        return mysql.MySQLSegmentStore(
            dsn, pool=pool, datacenter=datacenter, settings=settings, create_rows=create_rows
        )
    return postgres.PostgresSegmentStore(
        dsn, pool=pool, datacenter=datacenter, settings=settings, create_rows=create_rows
    )


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


async def drop_rows(
    dsn: str, pool_ref: str, generation: int, *, settings: DatabaseSettings | None = None
) -> int:
    """Delete a pool's segment rows of `generation` or earlier; how many there were.

    Rows stamped with a later generation belong to a re-created pool and stay.
    """
    if engine_of(dsn) == "mysql":
        return await mysql.drop_rows(dsn, pool_ref, generation, settings=settings)
    return await postgres.drop_rows(dsn, pool_ref, generation, settings=settings)
