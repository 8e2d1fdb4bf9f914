"""A pool's config: the types a `NebulaIdPool` spec becomes, and their stored form.

`PoolConfig` is what the operator and `nebula-id pool apply` write to etcd at
``pools/{ns}/{name}/config`` (`PoolConfig.to_json`) and what every sidecar reads
back; `check_update` refuses a new config that could make two IDs collide with
the stored one.  Reading a spec or a stored document into these types is
`core.poolspec`'s job.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from nebula_id import errors
from nebula_id.core import failover as failovers
from nebula_id.core import handover
from nebula_id.core import layout as layouts
from nebula_id.core.jsontypes import JsonObject, JsonValue
from nebula_id.core.tags import DEFAULT_MAX_STEP as DEFAULT_MAX_STEP
from nebula_id.core.tags import DEFAULT_STEP as DEFAULT_STEP
from nebula_id.core.tags import TAG_NAME as TAG_NAME
from nebula_id.core.tags import Tag as Tag

ALGORITHMS = ("snowflake", "segment", "uuid7", "uuid4")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

DEFAULT_TTL_SECONDS = 10
DEFAULT_TOLERANCE_MS = 5
DEFAULT_MAX_BATCH = 1000
DEFAULT_PORT = 8080
CONFIG_FORMAT = 1


@dataclasses.dataclass(frozen=True, slots=True)
class SecretRef:
    name: str
    key: str = "dsn"


@dataclasses.dataclass(frozen=True, slots=True)
class Datacenter:
    name: str
    id: int
    database_secret_ref: SecretRef | None = None
    failover: failovers.FailoverSettings | None = None
    """This datacenter's failover settings (the pool's with its overrides); None: the pool's."""


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimit:
    requests_per_second: float
    burst: int


@dataclasses.dataclass(frozen=True, slots=True)
class SidecarSpec:
    image: str | None = None
    port: int = DEFAULT_PORT
    max_batch_size: int = DEFAULT_MAX_BATCH
    resources: Mapping[str, JsonValue] | None = None
    """`spec.sidecar.resources` as given: Kubernetes validates it in the pod."""
    auth_secret_ref: SecretRef | None = None
    rate_limit: RateLimit | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PoolConfig:
    """A validated pool, as stored at ``pools/{ns}/{name}/config``."""

    namespace: str
    name: str
    algorithm: str
    layout: layouts.SnowflakeLayout
    clock_backward_tolerance_ms: int
    datacenters: tuple[Datacenter, ...]
    tags: tuple[Tag, ...]
    lease_ttl_seconds: int
    sidecar: SidecarSpec
    # IDs of datacenters that were removed: never handed to another datacenter.
    retired_datacenter_ids: tuple[int, ...] = ()
    # Which life of the pool this is: raised each time the pool is created again after
    # a deletion, and stored with every mark and segment row (see `core.identity`).
    generation: int = 0
    failover: failovers.FailoverSettings = dataclasses.field(
        default_factory=failovers.FailoverSettings
    )
    """`spec.failover`: how sidecars and the operator give up and take back a datacenter."""
    # The Snowflake generator this pool replaces (spec.snowflake.previous*), if declared.
    previous_snowflake: handover.PreviousGenerator | None = None

    @property
    def snowflake_issue_after_ms(self) -> int | None:
        """Unix ms that every Snowflake ID's timestamp must exceed, if the pool says so."""
        if self.previous_snowflake is None:
            return None
        return self.previous_snowflake.issue_after_ms(self.layout)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def datacenter(self, name: str | None) -> Datacenter:
        """The named datacenter, or the first one when `name` is None."""
        if name is None:
            return self.datacenters[0]
        for dc in self.datacenters:
            if dc.name == name:
                return dc
        known = ", ".join(dc.name for dc in self.datacenters)
        raise errors.ConfigError(f"pool {self.ref} has no datacenter {name!r} (it has: {known})")

    def failover_for(self, name: str) -> failovers.FailoverSettings:
        """The failover settings of the named datacenter."""
        own = self.datacenter(name).failover
        return own if own is not None else self.failover

    def tag(self, name: str) -> Tag:
        for tag in self.tags:
            if tag.name == name:
                return tag
        raise errors.UnknownTag(name, [t.name for t in self.tags])

    def to_json(self) -> JsonObject:
        """The JSON document written to etcd (no secrets: only Secret names)."""
        sidecar: JsonObject = {
            "port": self.sidecar.port,
            "maxBatchSize": self.sidecar.max_batch_size,
        }
        if self.sidecar.image:
            sidecar["image"] = self.sidecar.image
        if self.sidecar.rate_limit:
            sidecar["rateLimit"] = {
                "requestsPerSecond": self.sidecar.rate_limit.requests_per_second,
                "burst": self.sidecar.rate_limit.burst,
            }
        return {
            "format": CONFIG_FORMAT,
            "namespace": self.namespace,
            "name": self.name,
            "algorithm": self.algorithm,
            "snowflake": {
                **self.layout.to_json(),
                "epochMs": self.layout.epoch_ms,
                "clockBackwardToleranceMs": self.clock_backward_tolerance_ms,
                **(self.previous_snowflake.to_json() if self.previous_snowflake else {}),
            },
            "datacenters": [_datacenter_json(dc) for dc in self.datacenters],
            "segment": {
                "tags": [{"name": t.name, "step": t.step, "maxStep": t.max_step} for t in self.tags]
            },
            "lease": {"ttlSeconds": self.lease_ttl_seconds},
            "sidecar": sidecar,
            "retiredDatacenterIds": list(self.retired_datacenter_ids),
            "generation": self.generation,
            "failover": _failover_json(self.failover),
        }


def _datacenter_json(dc: Datacenter) -> JsonObject:
    doc: JsonObject = {"name": dc.name, "id": dc.id}
    if dc.database_secret_ref:
        ref = dc.database_secret_ref
        doc["databaseSecretRef"] = {"name": ref.name, "key": ref.key}
    if dc.failover:
        doc["failover"] = _failover_overrides(dc.failover)
    return doc


def _failover_overrides(settings: failovers.FailoverSettings) -> JsonObject:
    return {
        "failureThreshold": settings.failure_threshold,
        "holdDownSeconds": settings.hold_down_s,
        "recoverySeconds": settings.recovery_s,
    }


def _failover_json(settings: failovers.FailoverSettings) -> JsonObject:
    return _failover_overrides(settings) | {
        "probeIntervalSeconds": settings.probe_interval_s,
        "healthMaxAgeSeconds": settings.health_max_age_s,
    }


def check_update(old: PoolConfig, new: PoolConfig) -> None:
    """Refuse changes that could make two IDs collide."""
    if old.layout != new.layout:
        raise errors.InvalidPool(
            "the Snowflake layout and epoch cannot change once the pool exists "
            f"(stored {old.layout.to_json()}, requested {new.layout.to_json()}); "
            "create a new pool instead"
        )
    old_by_name = {dc.name: dc.id for dc in old.datacenters}
    old_owner = {dc.id: dc.name for dc in old.datacenters}
    for dc in new.datacenters:
        if dc.name in old_by_name and old_by_name[dc.name] != dc.id:
            raise errors.InvalidPool(
                f"datacenter {dc.name!r} has id {old_by_name[dc.name]}; it cannot change to {dc.id}"
            )
        if dc.id in old_owner and old_owner[dc.id] != dc.name:
            raise errors.InvalidPool(
                f"datacenter id {dc.id} belongs to {old_owner[dc.id]!r}; it cannot be reused "
                f"for {dc.name!r}"
            )
        if dc.id in old.retired_datacenter_ids:
            raise errors.InvalidPool(
                f"datacenter id {dc.id} was used by a removed datacenter and cannot be reused"
            )
