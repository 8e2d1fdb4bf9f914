"""A pool's identity: what must outlive its config for IDs to stay unique.

An ID is only unique against the layout, the epoch and the datacenter IDs it was made
with.  The config disappears when a pool is deleted, but the IDs it issued (and the
marks and segment rows that remember them) do not; so the identity is kept at
``pools/{ns}/{name}/identity`` as a tombstone until the data is dropped.  A pool
created again under the same name is checked against it: it continues with the same
layout, epoch and datacenter IDs (above everything issued before, since marks and
rows are kept), or it is refused.

The generation counts the lives of the pool.  It is raised on every re-creation,
written into the config, every high-water mark and every segment row, and never goes
down (not even when the data is dropped), so a sidecar can tell a re-created pool from
the one it started with, and a database delete keyed by a generation can never touch
the rows of a later life.

States: ``live`` (a config exists), ``deleted`` (config gone, data kept: re-creation
must match), ``dropping`` (data being dropped: re-creation waits), ``dropped`` (no data
left: anything may be created, with a higher generation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

from nebula_id import errors
from nebula_id.core import jsontypes, poolspec
from nebula_id.core import layout as layouts
from nebula_id.core import pool as pools
from nebula_id.core.jsontypes import JsonObject

State = Literal["live", "deleted", "dropping", "dropped"]
STATES: tuple[State, ...] = ("live", "deleted", "dropping", "dropped")


@dataclasses.dataclass(frozen=True, slots=True)
class PoolIdentity:
    generation: int
    state: State
    layout: layouts.SnowflakeLayout
    datacenters: tuple[tuple[str, int], ...]
    """(name, id) of the datacenters of the last config."""
    retired_datacenter_ids: tuple[int, ...]
    lease_ttl_seconds: int
    changed_at_ms: int = 0

    @property
    def keeps_data(self) -> bool:
        """Marks, floors or segment rows of this pool may exist."""
        return self.state in ("live", "deleted", "dropping")

    def to_json(self) -> JsonObject:
        return {
            "generation": self.generation,
            "state": self.state,
            "snowflake": {**self.layout.to_json(), "epochMs": self.layout.epoch_ms},
            "datacenters": [{"name": n, "id": i} for n, i in self.datacenters],
            "retiredDatacenterIds": list(self.retired_datacenter_ids),
            "leaseTtlSeconds": self.lease_ttl_seconds,
            "changedAtMs": self.changed_at_ms,
        }

    def with_state(self, state: State, *, now_ms: int) -> PoolIdentity:
        return dataclasses.replace(self, state=state, changed_at_ms=now_ms)

    def as_previous(self, namespace: str, name: str) -> pools.PoolConfig:
        """A stand-in for the last config, for `poolspec.parse_spec`'s update checks."""
        return pools.PoolConfig(
            namespace=namespace,
            name=name,
            algorithm="snowflake",
            layout=self.layout,
            clock_backward_tolerance_ms=pools.DEFAULT_TOLERANCE_MS,
            datacenters=tuple(pools.Datacenter(name=n, id=i) for n, i in self.datacenters),
            tags=(),
            lease_ttl_seconds=self.lease_ttl_seconds,
            sidecar=pools.SidecarSpec(),
            retired_datacenter_ids=self.retired_datacenter_ids,
            generation=self.generation,
        )


def from_json(doc: Mapping[str, object]) -> PoolIdentity:
    """Read back `PoolIdentity.to_json`; anything malformed raises `ConfigError`."""
    try:
        layout, _ = poolspec.parse_layout(_object(doc["snowflake"]))
        return PoolIdentity(
            generation=_int(doc["generation"]),
            state=_state(doc["state"]),
            layout=layout,
            datacenters=tuple(
                (str(d["name"]), _int(d["id"])) for d in map(_object, _array(doc["datacenters"]))
            ),
            retired_datacenter_ids=tuple(
                _int(i) for i in _array(doc.get("retiredDatacenterIds", []))
            ),
            lease_ttl_seconds=_int(doc.get("leaseTtlSeconds", pools.DEFAULT_TTL_SECONDS)),
            changed_at_ms=_int(doc.get("changedAtMs", 0)),
        )
    except (KeyError, TypeError, ValueError, errors.InvalidPool) as e:
        raise errors.ConfigError(f"unreadable pool identity: {e}") from e


def _state(value: object) -> State:
    for state in STATES:
        if value == state:
            return state
    raise ValueError(f"unknown state {value!r}")


def _object(value: object) -> Mapping[str, object]:
    found = jsontypes.as_object(value)
    if found is None:
        raise TypeError(f"expected an object, got {value!r}")
    return found


def _array(value: object) -> Sequence[object]:
    found = jsontypes.as_list(value)
    if found is None:
        raise TypeError(f"expected an array, got {value!r}")
    return found


def _int(value: object) -> int:
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"expected an integer, got {value!r}")


def of_config(
    config: pools.PoolConfig, previous: PoolIdentity | None, *, now_ms: int
) -> PoolIdentity:
    """The identity of a config being written: retired IDs accumulate, never shrink."""
    live = {dc.id for dc in config.datacenters}
    retired = set(config.retired_datacenter_ids)
    lease_ttl = config.lease_ttl_seconds
    if previous is not None and previous.keeps_data:
        retired |= set(previous.retired_datacenter_ids)
        retired |= {i for _, i in previous.datacenters} - live
        # A holder of the earlier config may still run on its TTL: keep the longest.
        lease_ttl = max(lease_ttl, previous.lease_ttl_seconds)
    return PoolIdentity(
        generation=config.generation,
        state="live",
        layout=config.layout,
        datacenters=tuple((dc.name, dc.id) for dc in config.datacenters),
        retired_datacenter_ids=tuple(sorted(retired - live)),
        lease_ttl_seconds=lease_ttl,
        changed_at_ms=now_ms,
    )


class RecreationRefused(errors.InvalidPool):
    """A deleted pool was created again with another layout, epoch or datacenter IDs."""


def refusal(ref: str, identity: PoolIdentity, why: str) -> RecreationRefused:
    """The error for a re-creation that does not match the kept identity."""
    return RecreationRefused(
        f"pool {ref} was deleted, but the IDs it issued are remembered (generation "
        f"{identity.generation}, layout {identity.layout.to_json()}, epoch "
        f"{layouts.format_epoch(identity.layout.epoch_ms)}, datacenters "
        f"{dict(identity.datacenters)}, retired datacenter IDs "
        f"{list(identity.retired_datacenter_ids)}); {why}. Re-create it with the same layout, "
        "epoch and datacenter IDs to continue above every ID issued before, or delete it "
        'with its data dropped first (annotation nebula-id.io/drop-data-on-delete: "true")'
    )
