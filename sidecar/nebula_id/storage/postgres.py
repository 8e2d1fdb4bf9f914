"""Segment counters in PostgreSQL: one row per (pool, tag, datacenter).

A range is one atomic statement, ``UPDATE ... SET max_id = max_id + $step ...
RETURNING max_id``, so two sidecars can never receive the same range, and a
restarted sidecar continues above everything any earlier process buffered.

Datacenters are disjoint by construction.  Each datacenter has its own row (in
its own database) and its own slice of the 63-bit ID space: the final ID is
``datacenter_base(dc.id, datacenterBits) + counter``, and the counter is
refused before it could reach `counter_limit`.  The row remembers the
datacenter ID it was created for, and an allocation for any other ID is refused,
so renumbering a datacenter cannot silently re-issue old counters.

Counters start at 1, so no datacenter ever issues its bare base (ID 0 for the
first datacenter), which many applications treat as "no ID".
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from nebula_id import errors
from nebula_id.core import pool as pools
from nebula_id.storage import rowstore

TABLE = "nebula_segments"
FIRST_COUNTER = 1
# Serialises concurrent provisioning (CREATE TABLE IF NOT EXISTS races in PostgreSQL).
_PROVISION_LOCK_KEY = 0x6E6562756C61  # "nebula"

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    pool          text        NOT NULL,
    tag           text        NOT NULL,
    datacenter    text        NOT NULL,
    datacenter_id integer     NOT NULL,
    max_id        bigint      NOT NULL,
    step          bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    generation    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (pool, tag, datacenter)
)
"""

# Bandit B608 accepted for the queries below (marked nosec): TABLE and FIRST_COUNTER
# are our constants, every value is a $n parameter.

# Tables made before rows carried the pool's generation.
ADD_GENERATION = (
    f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 0"  # nosec B608
)

# A re-created pool (same identity, data kept) takes its old rows over: they carry the
# newest generation, so a drop of an earlier life cannot delete them.
STAMP_GENERATION = f"""
UPDATE {TABLE} SET generation = GREATEST(generation, $4::bigint)
 WHERE pool = $1 AND tag = $2 AND datacenter = $3
"""  # nosec B608

# Only rows of this life or earlier ones: a drop that was overtaken by a re-creation
# (a deposed operator leader resuming) leaves the new life's rows alone.
DROP_ROWS = f"DELETE FROM {TABLE} WHERE pool = $1 AND generation <= $2::bigint"  # nosec B608

INSERT_TAG = f"""
INSERT INTO {TABLE} (pool, tag, datacenter, datacenter_id, max_id, step, generation)
VALUES ($1, $2, $3, $4, {FIRST_COUNTER}, $5, $6)
ON CONFLICT (pool, tag, datacenter) DO NOTHING
RETURNING tag
"""  # nosec B608

# The step is a parameter so the adaptive step needs no schema change; the
# limit check is written as `max_id <= limit - step` so it cannot overflow.
ALLOCATE = f"""
UPDATE {TABLE}
   SET max_id = max_id + $4::bigint, step = $4::bigint, updated_at = now()
 WHERE pool = $1 AND tag = $2 AND datacenter = $3
   AND datacenter_id = $5 AND max_id <= $6::bigint - $4::bigint
RETURNING max_id
"""  # nosec B608

# A repair from the etcd floor: the row goes up to the floor, or is created at it.
RAISE_ROW = f"""
INSERT INTO {TABLE} AS t (pool, tag, datacenter, datacenter_id, max_id, step, generation)
VALUES ($1, $2, $3, $4, $5::bigint, 1, $6)
ON CONFLICT (pool, tag, datacenter) DO UPDATE
   SET max_id = GREATEST(t.max_id, EXCLUDED.max_id), updated_at = now()
 WHERE t.datacenter_id = EXCLUDED.datacenter_id
"""  # nosec B608

READ_ROW = f"""
SELECT datacenter_id, max_id FROM {TABLE} WHERE pool = $1 AND tag = $2 AND datacenter = $3
"""  # nosec B608

LOCK_ROW = READ_ROW + " FOR UPDATE"

RAISE_COUNTER = f"""
UPDATE {TABLE} SET max_id = $4::bigint, updated_at = now()
 WHERE pool = $1 AND tag = $2 AND datacenter = $3 AND max_id < $4::bigint
"""  # nosec B608

# A range must survive a database crash before any of its IDs is served, even
# when the server runs with synchronous_commit=off (a popular speed-up that
# loses the last commits on a crash, which here would mean re-issued IDs).
SESSION_SETTINGS = {"synchronous_commit": "on", "application_name": "nebula-id"}

T = TypeVar("T")
_Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


@dataclasses.dataclass(frozen=True, slots=True)
class PostgresSettings:
    """Connection pool and timeouts of one datacenter's database."""

    connect_timeout_s: float = 3.0
    """Opening one connection (TCP, TLS, authentication)."""

    command_timeout_s: float = 3.0
    """One statement; an allocation as a whole gets connect + command."""

    pool_max_size: int = 4
    """Connections per datacenter; allocations are rare, so a few suffice."""

    attempts: int = 2
    """Tries per call; after a database restart the first try may hit a dead pooled connection."""

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0 or self.command_timeout_s <= 0:
            raise errors.ConfigError("PostgreSQL timeouts must be positive")
        if self.pool_max_size < 1:
            raise errors.ConfigError("PostgreSQL pool_max_size must be at least 1")
        if self.attempts < 1:
            raise errors.ConfigError("PostgreSQL attempts must be at least 1")


@dataclasses.dataclass(frozen=True, slots=True)
class ProvisionResult:
    """What `provision` found and did in one database."""

    datacenter: str
    created_tags: tuple[str, ...]
    existing_tags: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    """Settings of the database that put durability at risk (empty when all is well)."""


# Everything asyncpg or the network can throw at us; all of it becomes StorageError.
# ValueError: a DSN asyncpg cannot parse (urllib's "Invalid IPv6 URL", a bad port).
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
    ValueError,
)
_DB_ERRORS = DB_ERRORS
# Errors after which a fresh connection may succeed at once.
_RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    # A connection left in a broken protocol state by a crash; the pool drops it.
    asyncpg.exceptions.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
)


_SAFE_HOST = re.compile(r"[A-Za-z0-9._:\[\]/%-]{1,255}")
_KEYWORD_HOST = re.compile(r"(?:^|\s)host\s*=\s*'?([^\s']+)")
_KEYWORD_PORT = re.compile(r"(?:^|\s)port\s*=\s*'?(\d{1,5})")


def where(dsn: str) -> str:
    """The host (and port) of a DSN: the only part of it that messages, status and logs name.

    User names, passwords, database names and query parameters (``password=``,
    ``sslpassword=``, ``options=``) may all be secret, and a DSN that does not
    parse may be anything, so nothing else of it is ever repeated.
    """
    text = dsn.strip()
    host, port = _url_host(text) if "://" in text else _keyword_host(text)
    if not host or not _SAFE_HOST.fullmatch(host):
        return "the configured database"
    if port and port.isdigit():
        return f"{host}:{port}"
    return host


def _url_host(text: str) -> tuple[str | None, str | None]:
    try:
        parts = urllib.parse.urlsplit(text)
        host, port = parts.hostname, (str(parts.port) if parts.port else None)
    except ValueError:
        return None, None
    if not host:  # postgresql:///db?host=/run/postgresql
        query = urllib.parse.parse_qs(parts.query)
        host = next(iter(query.get("host", [])), None)
        port = port or next(iter(query.get("port", [])), None)
    return host, port


def _keyword_host(text: str) -> tuple[str | None, str | None]:
    host, port = _KEYWORD_HOST.search(text), _KEYWORD_PORT.search(text)
    return (host.group(1) if host else None), (port.group(1) if port else None)


def failure(error: BaseException) -> str:
    """An error's class and code, never its text: drivers' messages can carry the DSN."""
    name = type(error).__name__
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(error, asyncpg.PostgresError) and isinstance(sqlstate, str):
        return f"{name} (SQLSTATE {sqlstate})"
    code = error.errno if isinstance(error, OSError) else None
    if code is not None and code in errno.errorcode:
        return f"{name} ({errno.errorcode[code]})"
    if error.args and isinstance(error.args[0], int):  # MySQL's numeric error codes
        return f"{name} (error {error.args[0]})"
    return name


async def _create_rows(
    conn: _Connection, pool: pools.PoolConfig, datacenter: pools.Datacenter
) -> ProvisionResult:
    """Create the table and the missing tag rows; refuse rows of another datacenter ID."""
    created: list[str] = []
    existing: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PROVISION_LOCK_KEY)
        await conn.execute(CREATE_TABLE)
        await conn.execute(ADD_GENERATION)
        for tag in pool.tags:
            inserted = await conn.fetchval(
                INSERT_TAG,
                pool.ref,
                tag.name,
                datacenter.name,
                datacenter.id,
                tag.step,
                pool.generation,
            )
            if inserted is not None:
                created.append(tag.name)
                continue
            row = await conn.fetchrow(READ_ROW, pool.ref, tag.name, datacenter.name)
            if row is not None and row["datacenter_id"] != datacenter.id:
                raise errors.InvalidPool(
                    f"tag {tag.name!r} of pool {pool.ref} in datacenter {datacenter.name!r} "
                    f"was created for datacenter id {row['datacenter_id']}, the pool now says "
                    f"{datacenter.id}; refusing, because its counters could collide"
                )
            await conn.execute(
                STAMP_GENERATION, pool.ref, tag.name, datacenter.name, pool.generation
            )
            existing.append(tag.name)
    return ProvisionResult(datacenter.name, tuple(created), tuple(existing))


async def provision(
    dsn: str,
    pool: pools.PoolConfig,
    datacenter: pools.Datacenter,
    *,
    settings: PostgresSettings | None = None,
) -> ProvisionResult:
    """Create the table and the pool's tags in one datacenter's database, if missing.

    Idempotent and safe to run concurrently: it never drops, resets or lowers
    anything, so running it again (or from several places) cannot re-issue IDs.
    """
    settings = settings or PostgresSettings()
    return await _connected(
        dsn,
        settings,
        budget_s=settings.connect_timeout_s + 2 * settings.command_timeout_s,
        what=f"provision segments of pool {pool.ref} in datacenter {datacenter.name!r}",
        operation=lambda conn: _create_rows(conn, pool, datacenter),
    )


async def _connected(
    dsn: str,
    settings: PostgresSettings,
    *,
    budget_s: float,
    what: str,
    operation: Callable[[_Connection], Awaitable[T]],
) -> T:
    """Run `operation` on a fresh connection within `budget_s`; `StorageError` on failure."""
    try:
        async with asyncio.timeout(budget_s):
            conn = await asyncpg.connect(
                dsn,
                timeout=settings.connect_timeout_s,
                command_timeout=settings.command_timeout_s,
                server_settings=SESSION_SETTINGS,
            )
            try:
                return await operation(conn)
            finally:
                await conn.close(timeout=settings.command_timeout_s)
    except _DB_ERRORS as e:
        raise errors.StorageError(f"cannot {what} at {where(dsn)}: {failure(e)}") from e


async def with_connection(
    dsn: str, *, timeout_s: float, what: str, operation: Callable[[_Connection], Awaitable[T]]
) -> T:
    """Run `operation` on a fresh connection, within a timeout; `StorageError` on failure."""
    settings = PostgresSettings(connect_timeout_s=timeout_s, command_timeout_s=timeout_s)
    return await _connected(dsn, settings, budget_s=timeout_s * 2, what=what, operation=operation)


async def ping(dsn: str, *, timeout_s: float) -> None:
    """One ``SELECT 1``; `StorageError` when it fails."""

    async def select(conn: _Connection) -> None:
        await conn.fetchval("SELECT 1")

    await with_connection(dsn, timeout_s=timeout_s, what="answer SELECT 1", operation=select)


async def drop_rows(
    dsn: str, pool_ref: str, generation: int, *, settings: PostgresSettings | None = None
) -> int:
    """Delete the segment rows of `pool_ref` up to `generation`; returns how many."""
    settings = settings or PostgresSettings()

    async def drop(conn: _Connection) -> int:
        if await conn.fetchval("SELECT to_regclass($1)", TABLE) is None:
            return 0
        await conn.execute(ADD_GENERATION)
        status = await conn.execute(DROP_ROWS, pool_ref, generation)
        return int(status.split()[-1]) if status.startswith("DELETE") else 0

    return await _connected(
        dsn,
        settings,
        budget_s=settings.connect_timeout_s + 2 * settings.command_timeout_s,
        what=f"drop the segments of {pool_ref}",
        operation=drop,
    )


class PostgresSegmentStore(rowstore.RowStore[_Connection, PostgresSettings]):
    """A `core.segment.SegmentStore` over one datacenter's PostgreSQL database.

    The rules are `rowstore.RowStore`'s; this class gives them PostgreSQL's SQL and
    an asyncpg connection pool.
    """

    ENGINE = "PostgreSQL"
    DB_ERRORS = _DB_ERRORS

    def __init__(
        self,
        dsn: str,
        *,
        pool: pools.PoolConfig,
        datacenter: pools.Datacenter,
        settings: PostgresSettings | None = None,
        create_rows: bool = True,
    ) -> None:
        self._dsn = dsn
        super().__init__(
            location=where(dsn),
            pool=pool,
            datacenter=datacenter,
            settings=settings or PostgresSettings(),
            create_rows=create_rows,
        )
        self._connections: asyncpg.Pool | None = None

    async def close(self) -> None:
        self._closed = True
        connections, self._connections = self._connections, None
        if connections is not None:
            try:
                await asyncio.wait_for(connections.close(), self._settings.command_timeout_s)
            except _DB_ERRORS:
                connections.terminate()

    # --- the engine's part of `RowStore` -------------------------------------------

    def _retryable(self, error: BaseException) -> bool:
        return isinstance(error, _RETRYABLE)

    def _table_missing(self, error: BaseException) -> bool:
        return isinstance(error, asyncpg.UndefinedTableError)

    def _failure(self, error: BaseException) -> str:
        return failure(error)

    async def _provision(self, conn: _Connection) -> ProvisionResult:
        return await _create_rows(conn, self._pool_config, self._datacenter)

    async def _update_counter(self, conn: _Connection, tag: str, step: int) -> int | None:
        pool, dc = self._pool_config, self._datacenter
        max_id = await conn.fetchval(
            ALLOCATE,
            pool.ref,
            tag,
            dc.name,
            step,
            dc.id,
            self._limit,
            timeout=self._settings.command_timeout_s,
        )
        return None if max_id is None else int(max_id)

    async def _read_row(
        self, conn: _Connection, tag: str, *, lock: bool = False
    ) -> tuple[int, int] | None:
        pool, dc = self._pool_config, self._datacenter
        row = await conn.fetchrow(LOCK_ROW if lock else READ_ROW, pool.ref, tag, dc.name)
        return None if row is None else (int(row["datacenter_id"]), int(row["max_id"]))

    async def _raise_counter(self, conn: _Connection, tag: str, counter: int) -> None:
        pool, dc = self._pool_config, self._datacenter
        await conn.execute(RAISE_COUNTER, pool.ref, tag, dc.name, counter)

    async def _raise_row(self, conn: _Connection, tag: str, max_id: int) -> None:
        pool, dc = self._pool_config, self._datacenter
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PROVISION_LOCK_KEY)
            await conn.execute(CREATE_TABLE)
            await conn.execute(ADD_GENERATION)
            await conn.execute(RAISE_ROW, pool.ref, tag, dc.name, dc.id, max_id, pool.generation)

    async def _select_one(self, conn: _Connection) -> None:
        await conn.fetchval("SELECT 1", timeout=self._settings.command_timeout_s)

    @asynccontextmanager
    async def _transaction(self, conn: _Connection) -> AsyncIterator[None]:
        async with conn.transaction():
            yield

    async def _pool(self) -> asyncpg.Pool:
        self._check_open()
        if self._connections is None:
            # min_size=0: creating the pool opens no connection, so a sidecar
            # starts while its database is down and connects once it is back.
            self._connections = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._settings.pool_max_size,
                timeout=self._settings.connect_timeout_s,
                command_timeout=self._settings.command_timeout_s,
                max_inactive_connection_lifetime=60.0,
                server_settings=SESSION_SETTINGS,
            )
        return self._connections

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[_Connection]:
        connections = await self._pool()
        async with connections.acquire(timeout=self._settings.connect_timeout_s) as conn:
            yield conn
