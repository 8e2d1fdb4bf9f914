"""Segment floors in etcd: a second witness of how far each (tag, datacenter) has gone.

The database row is the first witness of a segment's progress.  A row can be lost
(an async replica promoted, a restore, a fresh DR database) or be the wrong one (a
DSN pointing at another datacenter's database); then the row alone would restart the
counter below IDs already handed out.  etcd keeps, per (datacenter, tag), the highest
ID any range may have handed out; the allocator takes the higher of the two and
repairs the other.

The value is JSON ``{"maxId": N}``.  Writes only ever raise it: a compare-and-swap
loop on the key's mod_revision, so a late write can never lower a newer one.
"""

from __future__ import annotations

import json

from nebula_id import errors
from nebula_id.core.keys import PoolKeys
from nebula_id.etcd.client import Compare, EtcdClient, Get, KeyValue, Put

MAX_ATTEMPTS = 32
"""Compare-and-swap rounds before giving up (each lost round means another writer won)."""


def decode_floor(kv: KeyValue) -> int:
    """The ``maxId`` of a stored floor; a malformed value is an error, never 0."""
    try:
        payload = json.loads(kv.value)
        value = payload["maxId"]
    except (ValueError, KeyError, TypeError) as e:
        raise errors.CoordinationError(f"segment floor {kv.key} is malformed: {kv.value!r}") from e
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.CoordinationError(f"segment floor {kv.key} is malformed: {kv.value!r}")
    return value


def encode_floor(max_id: int) -> bytes:
    return json.dumps({"maxId": max_id}, separators=(",", ":")).encode()


async def read_floor(client: EtcdClient, keys: PoolKeys, datacenter: int, tag: str) -> int | None:
    """The stored floor of (datacenter, tag), or None when etcd has none."""
    kv = await client.get(keys.floor(datacenter, tag))
    return None if kv is None else decode_floor(kv)


async def raise_floor(
    client: EtcdClient, keys: PoolKeys, datacenter: int, tag: str, max_id: int
) -> int:
    """Raise the floor of (datacenter, tag) to at least `max_id`; returns the stored value.

    Never lowers it: when the stored floor is already higher, nothing is written and
    the stored value is returned.
    """
    if max_id < 0:
        raise ValueError(f"a segment floor cannot be negative: {max_id}")
    key = keys.floor(datacenter, tag)
    kv = await client.get(key)
    for _ in range(MAX_ATTEMPTS):
        current = None if kv is None else decode_floor(kv)
        if current is not None and current >= max_id:
            return current
        revision = 0 if kv is None else kv.mod_revision
        result = await client.txn(
            [Compare.mod_revision(key, revision)], [Put(key, encode_floor(max_id))], [Get(key)]
        )
        if result.succeeded:
            return max_id
        kv = result.ranges[0][0] if result.ranges and result.ranges[0] else None
    raise errors.CoordinationError(f"segment floor {key} kept changing; gave up raising it")


async def advance_floor(
    client: EtcdClient, keys: PoolKeys, datacenter: int, tag: str, start: int, max_id: int
) -> int | None:
    """Record a range ``[start, max_id)`` of counters, if no range before it reached past `start`.

    The floor is read and raised in one compare-and-swap, so of two ranges that overlap
    (a database row that went back while both were taken) at most one is recorded.
    Returns None when recorded, else the floor that refuses the range.
    """
    if not 0 <= start < max_id:
        raise ValueError(f"not a range of counters: [{start}, {max_id})")
    key = keys.floor(datacenter, tag)
    kv = await client.get(key)
    for _ in range(MAX_ATTEMPTS):
        current = None if kv is None else decode_floor(kv)
        if current is not None and current > start:
            return current
        revision = 0 if kv is None else kv.mod_revision
        result = await client.txn(
            [Compare.mod_revision(key, revision)], [Put(key, encode_floor(max_id))], [Get(key)]
        )
        if result.succeeded:
            return None
        kv = result.ranges[0][0] if result.ranges and result.ranges[0] else None
    raise errors.CoordinationError(f"segment floor {key} kept changing; gave up raising it")
