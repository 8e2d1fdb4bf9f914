"""Types for JSON documents: what we write, and how we read what others wrote.

Pool configs, status patches, OpenAPI, pod patches and etcd's gRPC-gateway
bodies are JSON.  `JsonValue` says "this can be written with `json.dumps`",
with `Sequence`/`Mapping` so that a `list[JsonObject]` or a `dict[str, int]`
built by a caller is one too.  `JsonObject` is a document being built.

A document we read (from `json.loads`, YAML, kopf) is `object` until checked:
`as_object`, `as_list` and `as_int` narrow it, so a parser says what shape it
expects where it expects it; `copy` carries a read object over into a
document being built.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias, cast

JsonValue: TypeAlias = (
    "bool | int | float | str | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
)
JsonObject: TypeAlias = "dict[str, JsonValue]"


def as_object(value: object) -> Mapping[str, object] | None:
    """`value` as a JSON object, or None when it is not a mapping.

    JSON's keys are strings; a YAML mapping with other keys simply has none of
    the names a parser looks up.
    """
    if isinstance(value, Mapping):
        return value
    return None


def as_list(value: object) -> Sequence[object] | None:
    """`value` as a JSON array, or None when it is not one."""
    if isinstance(value, list | tuple):
        return value
    return None


def as_objects(value: object) -> list[Mapping[str, object]]:
    """The objects of a JSON array (nothing when `value` is not an array)."""
    return [item for item in as_list(value) or () if isinstance(item, Mapping)]


def as_int(value: object, default: int = 0) -> int:
    """`value` as an integer (a number or a numeric string), `default` when absent or null."""
    if value is None:
        return default
    if isinstance(value, int | float | str):
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def as_number(value: object, default: float = 0.0) -> float:
    """`value` as a float (a number or a numeric string), `default` when absent or null."""
    if value is None:
        return default
    if isinstance(value, int | float | str):
        return float(value)
    raise ValueError(f"expected a number, got {value!r}")


def copy(doc: Mapping[str, object]) -> JsonObject:
    """A shallow copy of `doc`, an object read from JSON or YAML, to build on.

    What a JSON or YAML parser returns holds JSON values only, which is what
    the cast states: the values are carried over unread.
    """
    return cast(JsonObject, dict(doc))
