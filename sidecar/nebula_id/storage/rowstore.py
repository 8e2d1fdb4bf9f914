"""The engine-independent half of one datacenter's segment store.

PostgreSQL (`storage.postgres`) and MySQL/MariaDB (`storage.mysql`) keep the same
row per (pool, tag, datacenter) under the same rules: a range is one atomic update
that refuses a row of another datacenter ID or a counter that would leave the
datacenter's slice; a missing row is provisioned (or, where only provisioning may
create rows, reported as `RowMissing`); a floor is raised under a row lock and
never lowered; every call gets a time budget and a retry after a dead connection.
`RowStore` holds those rules once.  Each engine supplies its SQL and its driver:
how to connect, run one statement, lock a row, and recognise its errors.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import ClassVar, Generic, Protocol, TypeVar

from nebula_id import errors
from nebula_id.core import pool as pools
from nebula_id.core import segment
from nebula_id.storage.floored import RowMissing

log = logging.getLogger(__name__)

MAX_BIGINT = (1 << 63) - 1

T = TypeVar("T")
Conn = TypeVar("Conn")


class StoreSettings(Protocol):
    """What the store needs of `postgres.PostgresSettings` (both engines use it)."""

    @property
    def connect_timeout_s(self) -> float: ...

    @property
    def command_timeout_s(self) -> float: ...

    @property
    def attempts(self) -> int: ...


S = TypeVar("S", bound=StoreSettings)


class Provisioned(Protocol):
    """What the store needs of `postgres.ProvisionResult`."""

    @property
    def warnings(self) -> tuple[str, ...]: ...


class RowStore(abc.ABC, Generic[Conn, S]):
    """A `core.segment.SegmentStore` over one datacenter's database, less the engine.

    With ``create_rows=False`` (cluster mode, where provisioning creates the rows and
    `storage.floored` repairs them from etcd) a missing row raises `RowMissing`
    instead of being created at 1.
    """

    ENGINE: ClassVar[str]
    """The engine's name in messages ("PostgreSQL", "MySQL")."""
    DB_ERRORS: ClassVar[tuple[type[BaseException], ...]]
    """Everything the driver or the network can raise; all of it becomes `StorageError`."""

    def __init__(
        self,
        *,
        location: str,
        pool: pools.PoolConfig,
        datacenter: pools.Datacenter,
        settings: S,
        create_rows: bool,
    ) -> None:
        self._location = location
        self._create_rows = create_rows
        self._pool_config = pool
        self._datacenter = datacenter
        self._settings = settings
        bits = pool.layout.datacenter_bits
        self._base = segment.datacenter_base(datacenter.id, bits)
        self._limit = min(segment.counter_limit(bits), MAX_BIGINT)
        self._closed = False

    @property
    def datacenter(self) -> str:
        return self._datacenter.name

    @property
    def base(self) -> int:
        """The first ID of this datacenter's slice (counters are added to it)."""
        return self._base

    @property
    def limit(self) -> int:
        """Counters stay below this; the slice is ``[base, base + limit)``."""
        return self._limit

    @property
    def datacenter_id(self) -> int:
        return self._datacenter.id

    async def raise_row(self, tag: str, max_id: int) -> None:
        """Raise the row of `tag` to at least `max_id`, creating it there if missing."""
        await self._call(f"repair the row of {tag!r}", self._raise_row, tag, max_id)

    async def allocate(self, tag: str, step: int) -> segment.SegmentRange:
        """One new range of `tag`, `step` IDs long, from one atomic UPDATE."""
        if step < 1:
            raise errors.InvalidArgument(f"a segment step must be at least 1, got {step}")
        if step >= self._limit:
            raise errors.StorageError(f"step {step} does not fit the datacenter's ID slice")
        max_id = await self._call(f"allocate a range of {tag!r}", self._allocate_once, tag, step)
        return segment.SegmentRange(
            start=self._base + max_id - step,
            end=self._base + max_id,
            datacenter=self._datacenter.name,
            step=step,
        )

    async def raise_floor(self, tag: str, counter: int) -> tuple[int, int]:
        """Raise `tag`'s counter to at least `counter`; (before, after). Never lowers."""
        return await self._call(f"raise the floor of {tag!r}", self._raise_once, tag, counter)

    async def ping(self) -> None:
        """Raise `StorageError` unless the database answers a trivial query."""
        await self._call("ping", self._select_one)

    # --- what each engine supplies ------------------------------------------------

    @abc.abstractmethod
    def _acquire(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        """A pooled connection (the pool opens lazily, and not after `close`)."""

    @abc.abstractmethod
    def _transaction(self, conn: Conn) -> contextlib.AbstractAsyncContextManager[None]:
        """A transaction on `conn`, committed on success and rolled back on any error."""

    @abc.abstractmethod
    def _retryable(self, error: BaseException) -> bool:
        """Whether a fresh connection may succeed at once after `error`."""

    @abc.abstractmethod
    def _table_missing(self, error: BaseException) -> bool:
        """Whether `error` says the table does not exist."""

    @abc.abstractmethod
    def _failure(self, error: BaseException) -> str:
        """An error's class and code, never its text (drivers' messages can carry the DSN)."""

    @abc.abstractmethod
    async def _provision(self, conn: Conn) -> Provisioned:
        """Create the table and the pool's missing rows; `InvalidPool` for a foreign row."""

    @abc.abstractmethod
    async def _update_counter(self, conn: Conn, tag: str, step: int) -> int | None:
        """The one atomic update of a range: the new counter, or None when no row took it."""

    @abc.abstractmethod
    async def _read_row(
        self, conn: Conn, tag: str, *, lock: bool = False
    ) -> tuple[int, int] | None:
        """The row of `tag` as (datacenter_id, max_id); `lock`: FOR UPDATE."""

    @abc.abstractmethod
    async def _raise_counter(self, conn: Conn, tag: str, counter: int) -> None:
        """Set the (locked) row's counter to `counter` when it is below."""

    @abc.abstractmethod
    async def _raise_row(self, conn: Conn, tag: str, max_id: int) -> None:
        """Raise the row to `max_id` or create it there (same datacenter ID only)."""

    @abc.abstractmethod
    async def _select_one(self, conn: Conn) -> None:
        """A trivial query."""

    # --- the rules ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise errors.StorageError(f"the store of datacenter {self.datacenter!r} is closed")

    async def _allocate_once(self, conn: Conn, tag: str, step: int) -> int:
        for _ in range(2):
            try:
                max_id = await self._update_counter(conn, tag, step)
            except self.DB_ERRORS as e:
                if not self._table_missing(e):
                    raise
                max_id = None
            if max_id is not None:
                return max_id
            # Nothing updated: the table or row is missing, or the row refuses us.
            await self._diagnose(conn, tag, step)
        raise errors.StorageError(f"tag {tag!r} could not be provisioned for allocation")

    async def _raise_once(self, conn: Conn, tag: str, counter: int) -> tuple[int, int]:
        pool, dc = self._pool_config, self._datacenter
        if all(t.name != tag for t in pool.tags):
            raise errors.InvalidPool(f"tag {tag!r} is not a tag of pool {pool.ref}")
        await self._provision(conn)
        async with self._transaction(conn):
            row = await self._read_row(conn, tag, lock=True)
            if row is None:  # provisioned just now, then dropped
                raise errors.StorageError(
                    f"the row of tag {tag!r} in datacenter {dc.name!r} was deleted while "
                    "being raised (is the pool's data being dropped?); nothing was raised"
                )
            before = row[1]
            if counter > before:
                await self._raise_counter(conn, tag, counter)
        return before, max(before, counter)

    async def _diagnose(self, conn: Conn, tag: str, step: int) -> None:
        """Provision a missing row (a sidecar finds its tags ready), or raise why not."""
        pool, dc = self._pool_config, self._datacenter
        try:
            row = await self._read_row(conn, tag)
        except self.DB_ERRORS as e:
            if not self._table_missing(e):
                raise
            row = None
        if row is None:
            if all(t.name != tag for t in pool.tags):
                raise errors.StorageError(f"tag {tag!r} is not a tag of pool {pool.ref}")
            if not self._create_rows:
                raise RowMissing(
                    f"tag {tag!r} of pool {pool.ref} has no row in datacenter {dc.name!r}; "
                    "only provisioning creates rows (the operator, or `nebula-id pool apply`)"
                )
            try:
                created = await self._provision(conn)
            except errors.InvalidPool as e:
                raise errors.StorageError(e.message) from e
            for warning in created.warnings:
                log.warning("datacenter %s: %s", dc.name, warning)
            return
        datacenter_id, max_id = row
        if datacenter_id != dc.id:
            raise errors.StorageError(
                f"tag {tag!r} in datacenter {dc.name!r} belongs to datacenter id "
                f"{datacenter_id}, not {dc.id}; refusing to allocate"
            )
        if max_id > self._limit - step:
            raise errors.StorageError(
                f"tag {tag!r} in datacenter {dc.name!r} has used its ID slice "
                f"(counter {max_id} + step {step} would reach {self._limit}); "
                "no more IDs can be issued here without risking duplicates"
            )

    async def _call(
        self,
        what: str,
        operation: Callable[..., Awaitable[T]],
        *args: object,
    ) -> T:
        settings = self._settings
        budget = settings.connect_timeout_s + 3 * settings.command_timeout_s
        last: BaseException | None = None
        for _attempt in range(settings.attempts):
            try:
                async with asyncio.timeout(budget), self._acquire() as conn:
                    return await operation(conn, *args)
            except self.DB_ERRORS as e:
                last = e
                if self._retryable(e):
                    continue
                break
        assert last is not None
        raise errors.StorageError(
            f"{self.ENGINE} of datacenter {self.datacenter!r} ({self._location}) could not "
            f"{what}: {self._failure(last)}"
        ) from last
