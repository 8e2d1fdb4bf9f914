"""The values the etcd client speaks in, and their gateway JSON encoding.

Keys are text (our keyspace is), values are bytes; the gRPC-JSON gateway wants both
base64, and sends integers (revisions, lease IDs) as strings.  Transactions are built
from `Compare` conditions and `Put` / `Delete` / `Get` operations.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from typing import Literal

from nebula_id.core import jsontypes
from nebula_id.core.jsontypes import JsonObject


@dataclasses.dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    def text(self) -> str:
        return self.value.decode("utf-8")


@dataclasses.dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    count: int
    revision: int
    """The store revision the read saw (use it to start a watch after the read)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction; build it with the class methods."""

    key: str
    target: Literal["CREATE", "MOD", "VERSION", "VALUE", "LEASE"]
    result: Literal["EQUAL", "GREATER", "LESS", "NOT_EQUAL"]
    operand: int | bytes

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls(key, "CREATE", "EQUAL", 0)

    @classmethod
    def mod_revision(cls, key: str, revision: int) -> Compare:
        """Unchanged since `revision` (0: the key does not exist)."""
        return cls(key, "MOD", "EQUAL", revision)

    @classmethod
    def value_equals(cls, key: str, value: bytes) -> Compare:
        return cls(key, "VALUE", "EQUAL", value)

    @classmethod
    def lease_equals(cls, key: str, lease: int) -> Compare:
        return cls(key, "LEASE", "EQUAL", lease)

    def to_json(self) -> JsonObject:
        field = {
            "CREATE": "create_revision",
            "MOD": "mod_revision",
            "VERSION": "version",
            "VALUE": "value",
            "LEASE": "lease",
        }[self.target]
        operand = b64(self.operand) if isinstance(self.operand, bytes) else str(self.operand)
        return {"key": b64(self.key), "target": self.target, "result": self.result, field: operand}


@dataclasses.dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Get:
    key: str
    prefix: bool = False


Op = Put | Delete | Get


@dataclasses.dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    ranges: tuple[tuple[KeyValue, ...], ...]
    """The key-values of each `Get` of the branch that ran, in order."""


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: int


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: int
    ttl: int
    """Seconds left; -1 when the lease no longer exists."""
    granted_ttl: int
    keys: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev_kv: KeyValue | None
    revision: int


# --- encoding ---------------------------------------------------------------------------


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: object) -> bytes:
    """The bytes of a gateway base64 field; empty when the field is absent (the gateway
    omits empty values)."""
    if not text:
        return b""
    if not isinstance(text, str):
        raise ValueError(f"expected base64 text, got {text!r}")
    return base64.b64decode(text)


def prefix_end(prefix: str) -> bytes:
    """The `range_end` that makes a range cover every key starting with `prefix`."""
    raw = bytearray(prefix.encode("utf-8"))
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # every key


def kv_from_json(raw: Mapping[str, object]) -> KeyValue:
    return KeyValue(
        key=unb64(raw.get("key")).decode("utf-8", errors="replace"),
        value=unb64(raw.get("value")),
        create_revision=jsontypes.as_int(raw.get("create_revision")),
        mod_revision=jsontypes.as_int(raw.get("mod_revision")),
        version=jsontypes.as_int(raw.get("version")),
        lease=jsontypes.as_int(raw.get("lease")),
    )


def revision_of(body: Mapping[str, object]) -> int:
    header = jsontypes.as_object(body.get("header")) or {}
    return jsontypes.as_int(header.get("revision"))


def range_body(key: str, *, prefix: bool) -> JsonObject:
    body: JsonObject = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return body


def op_json(op: Op) -> JsonObject:
    if isinstance(op, Put):
        put: JsonObject = {"key": b64(op.key), "value": b64(op.value)}
        if op.lease:
            put["lease"] = str(op.lease)
        return {"request_put": put}
    if isinstance(op, Delete):
        return {"request_delete_range": range_body(op.key, prefix=op.prefix)}
    return {"request_range": range_body(op.key, prefix=op.prefix)}
