"""Read how far the generator being replaced has gone: Leaf's table, a sequence.

`nebula-id pool import` sets nebula-id's floors above these values, so the first
ID nebula-id issues is above every ID the old system ever issued.  Each reader
is one read-only query on a fresh connection, on either engine (the DSN's
scheme says which):

- Leaf's segment table, ``leaf_alloc (biz_tag, max_id, step, ...)``: ``max_id``
  is the end of the last range Leaf handed to any of its servers, so no Leaf
  ID is above it;
- a PostgreSQL sequence: its ``last_value`` counts every value any session
  has fetched, cached ones included;
- a MySQL/MariaDB table's ``AUTO_INCREMENT``: the next value it would use.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import SupportsInt

import asyncmy
import asyncpg
from asyncmy import errors as mysql_errors
from asyncpg.pool import PoolConnectionProxy

from nebula_id import errors
from nebula_id.storage import engines, mysql, postgres

DEFAULT_LEAF_TABLE = "leaf_alloc"
_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class LeafTag:
    """One row of Leaf's ``leaf_alloc``."""

    biz_tag: str
    max_id: int
    step: int


def _pg_ident(name: str) -> str:
    """``schema.name`` or ``name``, each part quoted as a PostgreSQL identifier."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise errors.InvalidArgument(f"{name!r} is not a [schema.]name")
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def _my_ident(name: str) -> str:
    if not name or "." in name:
        raise errors.InvalidArgument(f"{name!r} is not a table name (no schema: the DSN's)")
    return "`" + name.replace("`", "``") + "`"


Row = tuple[object, ...]
"""One row as the drivers return it (asyncpg's `Record` as a tuple)."""


def _int(value: object) -> int:
    """An integer column (the drivers give int; text is accepted as `int()` does)."""
    if isinstance(value, SupportsInt | str):
        return int(value)
    raise errors.InvalidArgument(f"expected an integer column, got {value!r}")


async def _pg_rows(dsn: str, sql: str, *args: object) -> list[Row]:
    async def fetch(
        conn: asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record],
    ) -> list[Row]:
        return [tuple(record) for record in await conn.fetch(sql, *args)]

    try:
        return await postgres.with_connection(
            dsn, timeout_s=_TIMEOUT_S, what="read the old generator's state", operation=fetch
        )
    except errors.StorageError as e:
        cause = e.__cause__
        if isinstance(cause, asyncpg.UndefinedTableError | asyncpg.UndefinedColumnError):
            raise errors.NotFound(e.message) from cause
        raise


async def _my_rows(dsn: str, sql: str, *args: object) -> list[Row]:
    async def fetch(conn: asyncmy.Connection) -> list[Row]:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, args)
            return list(await cursor.fetchall())

    try:
        return await mysql.with_connection(
            dsn, timeout_s=_TIMEOUT_S, what="read the old generator's state", operation=fetch
        )
    except errors.StorageError as e:
        cause = e.__cause__
        if isinstance(cause, mysql_errors.ProgrammingError) and cause.args[0] in (1054, 1146):
            raise errors.NotFound(e.message) from cause
        raise


async def read_leaf(dsn: str, *, table: str = DEFAULT_LEAF_TABLE) -> list[LeafTag]:
    """Every row of Leaf's table, by tag."""
    # Bandit B608 accepted: the table name is quoted as an identifier by _my_ident/_pg_ident.
    if engines.engine_of(dsn) == "mysql":
        rows = await _my_rows(dsn, f"SELECT biz_tag, max_id, step FROM {_my_ident(table)}")  # nosec B608
    else:
        rows = await _pg_rows(dsn, f"SELECT biz_tag, max_id, step FROM {_pg_ident(table)}")  # nosec B608
    return sorted(
        (LeafTag(str(r[0]), _int(r[1]), _int(r[2])) for r in rows), key=lambda t: t.biz_tag
    )


async def read_sequence(dsn: str, name: str) -> int:
    """The highest value the sequence (PostgreSQL) or AUTO_INCREMENT (MySQL) has issued.

    An upper bound: a PostgreSQL value fetched by a transaction that then rolled
    back counts too.  0 when nothing was ever issued.
    """
    if engines.engine_of(dsn) == "mysql":
        return await _auto_increment(dsn, name)
    quoted = _pg_ident(name)
    rows = await _pg_rows(
        dsn,
        "SELECT seqincrement FROM pg_catalog.pg_sequence WHERE seqrelid = to_regclass($1)",
        quoted,
    )
    if not rows:
        raise errors.NotFound(f"no sequence {name!r} at {postgres.where(dsn)}")
    if _int(rows[0][0]) < 0:
        raise errors.InvalidArgument(
            f"sequence {name!r} counts down (increment {rows[0][0]}); nothing to continue above"
        )
    # Bandit B608 accepted: `quoted` is the sequence name quoted as an identifier.
    (last_value, is_called), *_ = await _pg_rows(
        dsn,
        f"SELECT last_value, is_called FROM {quoted}",  # nosec B608
    )
    return _int(last_value) if is_called else max(0, _int(last_value) - 1)


async def _auto_increment(dsn: str, table: str) -> int:
    _my_ident(table)

    async def fetch(conn: asyncmy.Connection) -> list[Row]:
        async with conn.cursor() as cursor:
            # MySQL 8 caches table statistics in information_schema for a day;
            # MariaDB has no such cache (and no such variable).
            with contextlib.suppress(mysql_errors.OperationalError):
                await cursor.execute("SET SESSION information_schema_stats_expiry = 0")
            await cursor.execute(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (table,),
            )
            return list(await cursor.fetchall())

    rows = await mysql.with_connection(
        dsn, timeout_s=_TIMEOUT_S, what="read the AUTO_INCREMENT", operation=fetch
    )
    if not rows:
        raise errors.NotFound(f"no table {table!r} at {postgres.where(dsn)}")
    if rows[0][0] is None:
        raise errors.InvalidArgument(f"table {table!r} has no AUTO_INCREMENT column")
    return max(0, _int(rows[0][0]) - 1)
