"""A segment store whose progress is witnessed twice: the database row and an etcd floor.

A row alone can go back: an asynchronous replica promoted after a failover, a restore,
a fresh DR database, a DSN pointing at another datacenter's database.  Then the next
range would start below IDs already handed out.  So every range is checked against the
floor kept in etcd (`etcd.floors`): a range that starts below it is thrown away, the
row is raised to the floor (or created there), and a new range is taken.  A range is
returned only once the floor has been raised to its end, so each witness alone knows
how far the counter went; the allocator takes the higher and repairs the other.

Only provisioning creates rows at 1: a row that is missing and has no floor is an
error here, never a fresh start.
"""

from __future__ import annotations

from typing import Protocol

from nebula_id import errors
from nebula_id.core import keys as pool_keys
from nebula_id.core import segment
from nebula_id.etcd import client as etcd
from nebula_id.etcd import floors


class RowMissing(errors.StorageError):
    """A tag's row does not exist, and the store may not create it at 1 (any store raises it)."""


REPAIR_ROUNDS = 8
"""Ranges tried per call: a range is also refused when another sidecar's later range
was recorded first (a gap, not an error), so a few rounds are normal under contention."""


class RepairableStore(Protocol):
    """A per-datacenter segment store that can raise (or create) a row to a floor."""

    @property
    def base(self) -> int: ...

    @property
    def datacenter_id(self) -> int: ...

    async def allocate(self, tag: str, step: int) -> segment.SegmentRange: ...

    async def raise_row(self, tag: str, max_id: int) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...


class FlooredStore:
    """Wraps one datacenter's store; every range is checked against and recorded in etcd."""

    def __init__(
        self, inner: RepairableStore, client: etcd.EtcdClient, keys: pool_keys.PoolKeys
    ) -> None:
        self._inner = inner
        self._client = client
        self._keys = keys

    @property
    def base(self) -> int:
        return self._inner.base

    @property
    def datacenter_id(self) -> int:
        return self._inner.datacenter_id

    async def ping(self) -> None:
        await self._inner.ping()

    async def close(self) -> None:
        await self._inner.close()

    async def raise_row(self, tag: str, max_id: int) -> None:
        await self._inner.raise_row(tag, max_id)

    async def allocate(self, tag: str, step: int) -> segment.SegmentRange:
        dc = self._inner.datacenter_id
        try:
            for _ in range(REPAIR_ROUNDS):
                try:
                    allocated = await self._inner.allocate(tag, step)
                except RowMissing as e:
                    floor = await floors.read_floor(self._client, self._keys, dc, tag)
                    if floor is None:
                        raise errors.StorageError(e.message) from e
                    await self._inner.raise_row(tag, floor)
                    continue
                max_id = allocated.end - self._inner.base
                start = max_id - allocated.size
                floor = await floors.advance_floor(self._client, self._keys, dc, tag, start, max_id)
                if floor is None:
                    return allocated
                # A range at or above `start` was handed out before: never serve this one;
                # the row may be behind (lost, restored), so raise it to the floor.
                await self._inner.raise_row(tag, floor)
        except errors.CoordinationError as e:
            raise errors.StorageError(
                f"the etcd floor of tag {tag!r} (datacenter id {dc}) cannot be checked: {e.message}"
            ) from e
        raise errors.StorageError(
            f"tag {tag!r} (datacenter id {dc}) stayed below its etcd floor after "
            f"{REPAIR_ROUNDS} repairs"
        )
