"""Segment counters in MySQL or MariaDB (asyncmy): one row per (pool, tag, datacenter).

The same table, rules and slices as `storage.postgres`; only the SQL differs.
A range is one autocommitted statement, ``UPDATE ... SET max_id =
LAST_INSERT_ID(max_id + step) ...``: InnoDB locks the row for the statement,
and the new value comes back in the statement's own OK packet (its "insert
id"), so there is no second query and no window between the update and the
read.  It works alike on MySQL and on every MariaDB (MySQL has no ``UPDATE ...
RETURNING``; MariaDB 10.5 added ``RETURNING`` to INSERT and DELETE only, and to
UPDATE only in 13.0).

Durability: a range must survive a crash of the database before any of its IDs
is served.  InnoDB guarantees that only with ``innodb_flush_log_at_trx_commit
= 1`` (the default), a global setting that a session cannot override, so
`provision` checks it and warns when it is not 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import SupportsInt, TypedDict, TypeVar

import asyncmy
from asyncmy import errors as mysql_errors

from nebula_id import errors
from nebula_id.core import pool as pools
from nebula_id.storage import postgres, rowstore

log = logging.getLogger(__name__)

TABLE = postgres.TABLE
FIRST_COUNTER = postgres.FIRST_COUNTER
SCHEMES = ("mysql", "mariadb")
_ER_DUP_FIELDNAME = 1060
_ER_DUP_ENTRY = 1062
_ER_NO_SUCH_TABLE = 1146

# utf8mb4_bin: names compare byte for byte, as in PostgreSQL.  The key stays
# under InnoDB's 3072-byte limit (4 bytes per character).
CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    pool          varchar(320) NOT NULL,
    tag           varchar(253) NOT NULL,
    datacenter    varchar(63)  NOT NULL,
    datacenter_id int          NOT NULL,
    max_id        bigint       NOT NULL,
    step          bigint       NOT NULL,
    updated_at    timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    generation    bigint       NOT NULL DEFAULT 0,
    PRIMARY KEY (pool, tag, datacenter)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""

# Tables made before rows carried the pool's generation.  MySQL has no
# ADD COLUMN IF NOT EXISTS (MariaDB has), so the column is looked up first.
# Bandit B608 accepted for the queries below (marked nosec): TABLE and FIRST_COUNTER
# are our constants, every value is a %s parameter.

HAS_GENERATION = """
SELECT COUNT(*) FROM information_schema.COLUMNS
 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = 'generation'
"""

ADD_GENERATION = f"ALTER TABLE {TABLE} ADD COLUMN generation bigint NOT NULL DEFAULT 0"

# A re-created pool (same identity, data kept) takes its old rows over: they carry the
# newest generation, so a drop of an earlier life cannot delete them.
STAMP_GENERATION = f"""
UPDATE {TABLE} SET generation = GREATEST(generation, %s)
 WHERE pool = %s AND tag = %s AND datacenter = %s
"""  # nosec B608

# Only rows of this life or earlier ones: a drop that was overtaken by a re-creation
# (a deposed operator leader resuming) leaves the new life's rows alone.
DROP_ROWS = f"DELETE FROM {TABLE} WHERE pool = %s AND generation <= %s"  # nosec B608

INSERT_TAG = f"""
INSERT INTO {TABLE} (pool, tag, datacenter, datacenter_id, max_id, step, generation)
VALUES (%s, %s, %s, %s, {FIRST_COUNTER}, %s, %s)
"""  # nosec B608

# The limit check is written as `max_id <= limit - step` so it cannot overflow.
ALLOCATE = f"""
UPDATE {TABLE}
   SET max_id = LAST_INSERT_ID(max_id + %s), step = %s, updated_at = CURRENT_TIMESTAMP(6)
 WHERE pool = %s AND tag = %s AND datacenter = %s
   AND datacenter_id = %s AND max_id <= %s - %s
"""  # nosec B608

READ_ROW = f"""
SELECT datacenter_id, max_id FROM {TABLE} WHERE pool = %s AND tag = %s AND datacenter = %s
"""  # nosec B608

LOCK_ROW = READ_ROW + " FOR UPDATE"

# A repair from a floor kept elsewhere (etcd): the row goes up to it, or is created
# at it; a row of another datacenter ID is left alone.
RAISE_ROW = f"""
INSERT INTO {TABLE} (pool, tag, datacenter, datacenter_id, max_id, step, generation)
VALUES (%s, %s, %s, %s, %s, 1, %s)
ON DUPLICATE KEY UPDATE
    max_id = IF(datacenter_id = VALUES(datacenter_id), GREATEST(max_id, VALUES(max_id)), max_id),
    updated_at = CURRENT_TIMESTAMP(6)
"""  # nosec B608

RAISE_COUNTER = f"""
UPDATE {TABLE} SET max_id = %s, updated_at = CURRENT_TIMESTAMP(6)
 WHERE pool = %s AND tag = %s AND datacenter = %s AND max_id < %s
"""  # nosec B608

FLUSH_SETTING = "SELECT @@GLOBAL.innodb_flush_log_at_trx_commit"

T = TypeVar("T")
_Connection = asyncmy.Connection


class _ConnectArgs(TypedDict):
    """Keyword arguments of `asyncmy.connect` and `asyncmy.create_pool`."""

    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None
    connect_timeout: float
    autocommit: bool
    charset: str
    program_name: str
    init_command: str


# Everything asyncmy or the network can throw at us; all of it becomes StorageError.
_DB_ERRORS: tuple[type[BaseException], ...] = (
    mysql_errors.MySQLError,
    OSError,
    TimeoutError,
    # asyncmy reports some protocol states of a dead connection this way.
    RuntimeError,
)
# Error numbers after which a fresh connection may succeed at once: lost or
# refused connections, a server going down or not yet up.
_RETRYABLE_CODES = frozenset({1053, 1927, 2003, 2006, 2013, 2014, 2055})


def is_mysql(dsn: str) -> bool:
    """Whether `dsn` names a MySQL or MariaDB server (``mysql://`` or ``mariadb://``)."""
    scheme = dsn.partition("://")[0].lower()
    return scheme.split("+", 1)[0] in SCHEMES


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """Connection arguments parsed from a ``mysql://user:pass@host:port/db`` DSN."""

    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None = None

    @classmethod
    def parse(cls, dsn: str) -> Address:
        """Parse a DSN; ``?unix_socket=/path`` connects over a socket instead of TCP."""
        if not is_mysql(dsn):
            raise errors.ConfigError(f"{postgres.where(dsn)} is not a mysql:// or mariadb:// DSN")
        url = urllib.parse.urlsplit(dsn)
        database = urllib.parse.unquote(url.path.lstrip("/"))
        if not database:
            raise errors.ConfigError(f"{postgres.where(dsn)} names no database (…/DBNAME)")
        query = urllib.parse.parse_qs(url.query)
        try:
            port = url.port or 3306
        except ValueError as e:
            raise errors.ConfigError(f"{postgres.where(dsn)}: bad port") from e
        return cls(
            host=url.hostname or "127.0.0.1",
            port=port,
            user=urllib.parse.unquote(url.username or "root"),
            password=urllib.parse.unquote(url.password or ""),
            database=database,
            unix_socket=query.get("unix_socket", [None])[0],
        )

    def connect_args(self, connect_timeout_s: float) -> _ConnectArgs:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "unix_socket": self.unix_socket,
            "connect_timeout": connect_timeout_s,
            "autocommit": True,
            "charset": "utf8mb4",
            "program_name": "nebula-id",
            # Notes such as "table already exists" (CREATE TABLE IF NOT EXISTS on
            # every provisioning) would cost a SHOW WARNINGS round trip and a log line.
            "init_command": "SET SESSION sql_notes = 0",
        }


def _retryable(e: BaseException) -> bool:
    if isinstance(e, ConnectionError | mysql_errors.InterfaceError):
        return True
    if isinstance(e, mysql_errors.OperationalError) and e.args:
        return e.args[0] in _RETRYABLE_CODES
    return False


def _error_code(e: BaseException) -> int | None:
    if isinstance(e, mysql_errors.MySQLError) and e.args and isinstance(e.args[0], int):
        return e.args[0]
    return None


Row = tuple[object, ...]


async def _fetchone(conn: _Connection, sql: str, *args: object) -> Row | None:
    async with conn.cursor() as cursor:
        await cursor.execute(sql, args)
        row: Row | None = await cursor.fetchone()
        return row


def _int(value: object) -> int:
    """An integer column: asyncmy gives int (a numeric string is accepted as `int()` does)."""
    if isinstance(value, SupportsInt | str):
        return int(value)
    raise errors.StorageError(f"expected an integer column, got {value!r}")


async def _execute(conn: _Connection, sql: str, *args: object) -> int:
    async with conn.cursor() as cursor:
        return await cursor.execute(sql, args)


async def _flush_warning(conn: _Connection) -> str | None:
    row = await _fetchone(conn, FLUSH_SETTING)
    value = _int(row[0]) if row is not None else None
    if value == 1:
        return None
    return (
        f"innodb_flush_log_at_trx_commit is {value}, not 1: a crash of the database "
        "can lose the last allocated ranges and make nebula-id repeat IDs; set it to 1"
    )


async def _add_generation(conn: _Connection) -> None:
    """Give a table made before rows carried a generation its column (every row at 0)."""
    row = await _fetchone(conn, HAS_GENERATION, TABLE)
    if row is not None and _int(row[0]) > 0:
        return
    try:
        await _execute(conn, ADD_GENERATION)
    except mysql_errors.MySQLError as e:
        if _error_code(e) != _ER_DUP_FIELDNAME:  # else another connection added it first
            raise


async def _create_table(conn: _Connection) -> None:
    await _execute(conn, CREATE_TABLE)
    await _add_generation(conn)


async def _create_rows(
    conn: _Connection, pool: pools.PoolConfig, datacenter: pools.Datacenter
) -> postgres.ProvisionResult:
    """Create the table and the missing tag rows; refuse rows of another datacenter ID.

    Rows already there are stamped with the pool's generation (never lowered).
    """
    created: list[str] = []
    existing: list[str] = []
    await _create_table(conn)
    for tag in pool.tags:
        try:
            await _execute(
                conn,
                INSERT_TAG,
                pool.ref,
                tag.name,
                datacenter.name,
                datacenter.id,
                tag.step,
                pool.generation,
            )
        except mysql_errors.IntegrityError as e:
            if _error_code(e) != _ER_DUP_ENTRY:
                raise
        else:
            created.append(tag.name)
            continue
        row = await _fetchone(conn, READ_ROW, pool.ref, tag.name, datacenter.name)
        if row is not None and row[0] != datacenter.id:
            raise errors.InvalidPool(
                f"tag {tag.name!r} of pool {pool.ref} in datacenter {datacenter.name!r} "
                f"was created for datacenter id {row[0]}, the pool now says "
                f"{datacenter.id}; refusing, because its counters could collide"
            )
        await _execute(conn, STAMP_GENERATION, pool.generation, pool.ref, tag.name, datacenter.name)
        existing.append(tag.name)
    warning = await _flush_warning(conn)
    return postgres.ProvisionResult(
        datacenter.name,
        tuple(created),
        tuple(existing),
        warnings=(warning,) if warning else (),
    )


@contextlib.asynccontextmanager
async def _connection(dsn: str, settings: postgres.PostgresSettings) -> AsyncIterator[_Connection]:
    address = Address.parse(dsn)
    conn = await asyncmy.connect(**address.connect_args(settings.connect_timeout_s))
    try:
        yield conn
    finally:
        conn.close()


async def with_connection(
    dsn: str,
    *,
    timeout_s: float,
    what: str,
    operation: Callable[[_Connection], Awaitable[T]],
) -> T:
    """Run `operation` on a fresh connection, within a timeout; `StorageError` on failure."""
    settings = postgres.PostgresSettings(connect_timeout_s=timeout_s, command_timeout_s=timeout_s)
    try:
        async with asyncio.timeout(settings.connect_timeout_s + 2 * settings.command_timeout_s):
            async with _connection(dsn, settings) as conn:
                return await operation(conn)
    except _DB_ERRORS as e:
        raise errors.StorageError(
            f"cannot {what} at {postgres.where(dsn)}: {postgres.failure(e)}"
        ) from e


async def provision(
    dsn: str,
    pool: pools.PoolConfig,
    datacenter: pools.Datacenter,
    *,
    settings: postgres.PostgresSettings | None = None,
) -> postgres.ProvisionResult:
    """Create the table and the pool's tags in one datacenter's database, if missing.

    Idempotent and safe to run concurrently: it never drops, resets or lowers anything.
    """
    settings = settings or postgres.PostgresSettings()
    result = await with_connection(
        dsn,
        timeout_s=max(settings.connect_timeout_s, settings.command_timeout_s),
        what=f"provision segments of pool {pool.ref} in datacenter {datacenter.name!r}",
        operation=lambda conn: _create_rows(conn, pool, datacenter),
    )
    for warning in result.warnings:
        log.warning("datacenter %s (%s): %s", datacenter.name, postgres.where(dsn), warning)
    return result


async def ping(dsn: str, *, timeout_s: float) -> None:
    """One ``SELECT 1``; `StorageError` when it fails."""
    await with_connection(
        dsn,
        timeout_s=timeout_s,
        what="answer SELECT 1",
        operation=lambda conn: _fetchone(conn, "SELECT 1"),
    )


async def drop_rows(
    dsn: str, pool_ref: str, generation: int, *, settings: postgres.PostgresSettings | None = None
) -> int:
    """Delete the segment rows of `pool_ref` up to `generation`; returns how many."""
    settings = settings or postgres.PostgresSettings()

    async def drop(conn: _Connection) -> int:
        try:
            await _add_generation(conn)
            return await _execute(conn, DROP_ROWS, pool_ref, generation)
        except mysql_errors.ProgrammingError as e:
            if _error_code(e) == _ER_NO_SUCH_TABLE:
                return 0
            raise

    return await with_connection(
        dsn,
        timeout_s=max(settings.connect_timeout_s, settings.command_timeout_s),
        what=f"drop the segments of pool {pool_ref}",
        operation=drop,
    )


class MySQLSegmentStore(rowstore.RowStore[_Connection, postgres.PostgresSettings]):
    """A `core.segment.SegmentStore` over one datacenter's MySQL or MariaDB database.

    The rules are `rowstore.RowStore`'s; this class gives them MySQL's SQL and an
    asyncmy connection pool.
    """

    ENGINE = "MySQL"
    DB_ERRORS = _DB_ERRORS

    def __init__(
        self,
        dsn: str,
        *,
        pool: pools.PoolConfig,
        datacenter: pools.Datacenter,
        settings: postgres.PostgresSettings | None = None,
        create_rows: bool = True,
    ) -> None:
        self._address = Address.parse(dsn)
        super().__init__(
            location=postgres.where(dsn),
            pool=pool,
            datacenter=datacenter,
            settings=settings or postgres.PostgresSettings(),
            create_rows=create_rows,
        )
        self._connections: asyncmy.Pool | None = None

    async def close(self) -> None:
        self._closed = True
        connections, self._connections = self._connections, None
        if connections is not None:
            connections.close()
            try:
                await asyncio.wait_for(connections.wait_closed(), self._settings.command_timeout_s)
            except _DB_ERRORS:
                connections.terminate()

    # --- the engine's part of `RowStore` -------------------------------------------

    def _retryable(self, error: BaseException) -> bool:
        return _retryable(error)

    def _table_missing(self, error: BaseException) -> bool:
        return isinstance(error, mysql_errors.ProgrammingError) and (
            _error_code(error) == _ER_NO_SUCH_TABLE
        )

    def _failure(self, error: BaseException) -> str:
        return postgres.failure(error)

    async def _provision(self, conn: _Connection) -> postgres.ProvisionResult:
        return await _create_rows(conn, self._pool_config, self._datacenter)

    async def _update_counter(self, conn: _Connection, tag: str, step: int) -> int | None:
        pool, dc = self._pool_config, self._datacenter
        args = (step, step, pool.ref, tag, dc.name, dc.id, self._limit, step)
        async with conn.cursor() as cursor:
            updated = await cursor.execute(ALLOCATE, args)
            return int(cursor.lastrowid) if updated == 1 else None

    async def _read_row(
        self, conn: _Connection, tag: str, *, lock: bool = False
    ) -> tuple[int, int] | None:
        pool, dc = self._pool_config, self._datacenter
        row = await _fetchone(conn, LOCK_ROW if lock else READ_ROW, pool.ref, tag, dc.name)
        return None if row is None else (_int(row[0]), _int(row[1]))

    async def _raise_counter(self, conn: _Connection, tag: str, counter: int) -> None:
        pool, dc = self._pool_config, self._datacenter
        await _execute(conn, RAISE_COUNTER, counter, pool.ref, tag, dc.name, counter)

    async def _raise_row(self, conn: _Connection, tag: str, max_id: int) -> None:
        pool, dc = self._pool_config, self._datacenter
        await _create_table(conn)
        await _execute(conn, RAISE_ROW, pool.ref, tag, dc.name, dc.id, max_id, pool.generation)

    async def _select_one(self, conn: _Connection) -> None:
        await _fetchone(conn, "SELECT 1")

    @contextlib.asynccontextmanager
    async def _transaction(self, conn: _Connection) -> AsyncIterator[None]:
        await conn.begin()
        try:
            yield
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise

    async def _pool(self) -> asyncmy.Pool:
        self._check_open()
        if self._connections is None:
            # minsize=0: creating the pool opens no connection, so a sidecar
            # starts while its database is down and connects once it is back.
            self._connections = await asyncmy.create_pool(
                minsize=0,
                maxsize=self._settings.pool_max_size,
                pool_recycle=60,
                **self._address.connect_args(self._settings.connect_timeout_s),
            )
        return self._connections

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[_Connection]:
        connections = await self._pool()
        # Bounds the TCP connect, the handshake and the wait for a free connection.
        async with asyncio.timeout(self._settings.connect_timeout_s):
            conn = await connections.acquire()
        try:
            yield conn
        except BaseException:
            # After any failure (a timeout mid-query included) the connection's
            # protocol state is unknown: drop it rather than hand it out again.
            conn.close()
            raise
        finally:
            connections.release(conn)
