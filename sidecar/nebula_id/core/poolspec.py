"""Parse, default and validate a `NebulaIdPool` spec into a `core.pool.PoolConfig`.

One code path for everyone: the operator validates a `NebulaIdPool` with it,
`nebula-id pool apply -f pool.yaml` validates the same YAML with it, and the
sidecar reads back the `PoolConfig` they write to etcd.  The API server's CEL
rules reject most bad specs first; this module is the authority for the rest
(and for users without Kubernetes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import cast

from nebula_id import errors
from nebula_id.core import crd, handover
from nebula_id.core import failover as failovers
from nebula_id.core import layout as layouts
from nebula_id.core import tags as tags_mod
from nebula_id.core.jsontypes import JsonValue
from nebula_id.core.pool import (
    ALGORITHMS,
    CONFIG_FORMAT,
    DEFAULT_MAX_BATCH,
    DEFAULT_PORT,
    DEFAULT_TOLERANCE_MS,
    DEFAULT_TTL_SECONDS,
    DNS_LABEL,
    Datacenter,
    PoolConfig,
    RateLimit,
    SecretRef,
    SidecarSpec,
    check_update,
)
from nebula_id.core.tags import DEFAULT_STEP, Tag


def _int(raw: Mapping[str, object], key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidPool(f"{where}.{key} must be an integer, got {value!r}")
    return value


def _mapping(raw: object, where: str) -> Mapping[str, object]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise errors.InvalidPool(f"{where} must be a mapping, got {type(raw).__name__}")
    return raw


def _list(raw: object, where: str) -> list[object]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise errors.InvalidPool(f"{where} must be a list, got {type(raw).__name__}")
    return raw


def _secret_ref(raw: object, where: str) -> SecretRef | None:
    if raw is None:
        return None
    ref = _mapping(raw, where)
    name = ref.get("name")
    if not isinstance(name, str) or not name:
        raise errors.InvalidPool(f"{where}.name must name a Secret")
    key = ref.get("key", "dsn")
    if not isinstance(key, str) or not key:
        raise errors.InvalidPool(f"{where}.key must be a non-empty string")
    return SecretRef(name=name, key=key)


def _seconds(raw: Mapping[str, object], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.InvalidPool(f"{where}.{key} must be a number of seconds, got {value!r}")
    return float(value)


# Keys of `spec.failover`, and the subset a datacenter may override.
_FAILOVER_KEYS = {
    "failureThreshold": "failure_threshold",
    "holdDownSeconds": "hold_down_s",
    "recoverySeconds": "recovery_s",
    "probeIntervalSeconds": "probe_interval_s",
    "healthMaxAgeSeconds": "health_max_age_s",
}
_DATACENTER_FAILOVER_KEYS = ("failureThreshold", "holdDownSeconds", "recoverySeconds")


def parse_failover(
    raw: Mapping[str, object],
    where: str,
    *,
    base: failovers.FailoverSettings | None = None,
    keys: tuple[str, ...] = tuple(_FAILOVER_KEYS),
) -> failovers.FailoverSettings:
    """`spec.failover` (or a datacenter's overrides of `base`) as settings."""
    base = base or failovers.FailoverSettings()
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise errors.InvalidPool(f"{where} has no field {unknown[0]!r} (known: {', '.join(keys)})")
    # Keys outside `keys` were refused above, so each absent key keeps `base`'s value.
    try:
        settings = dataclasses.replace(
            base,
            failure_threshold=_int(raw, "failureThreshold", base.failure_threshold, where),
            hold_down_s=_seconds(raw, "holdDownSeconds", base.hold_down_s, where),
            recovery_s=_seconds(raw, "recoverySeconds", base.recovery_s, where),
            probe_interval_s=_seconds(raw, "probeIntervalSeconds", base.probe_interval_s, where),
            health_max_age_s=_seconds(raw, "healthMaxAgeSeconds", base.health_max_age_s, where),
        )
    except errors.ConfigError as e:
        raise errors.InvalidPool(f"{where}: {e.message}") from e
    if settings.health_max_age_s < 2 * settings.probe_interval_s:
        raise errors.InvalidPool(
            f"{where}.healthMaxAgeSeconds ({settings.health_max_age_s:g}) must be at least twice "
            f"probeIntervalSeconds ({settings.probe_interval_s:g}), or published health "
            "would always look stale"
        )
    return settings


def parse_layout(raw: Mapping[str, object]) -> tuple[layouts.SnowflakeLayout, int]:
    """`spec.snowflake` as a layout and a clock-backward tolerance (ms)."""
    where = "spec.snowflake"
    epoch = raw.get("epoch", layouts.DEFAULT_EPOCH)
    if "epochMs" in raw:
        epoch_ms = _int(raw, "epochMs", 0, where)
    elif isinstance(epoch, int) and not isinstance(epoch, bool):
        epoch_ms = epoch
    elif isinstance(epoch, str):
        try:
            epoch_ms = layouts.parse_epoch(epoch)
        except errors.InvalidLayout as e:
            raise errors.InvalidPool(f"{where}.epoch: {e.message}") from e
    else:
        raise errors.InvalidPool(f"{where}.epoch must be an RFC 3339 timestamp, got {epoch!r}")
    try:
        layout = layouts.SnowflakeLayout(
            timestamp_bits=_int(raw, "timestampBits", 41, where),
            datacenter_bits=_int(raw, "datacenterBits", 5, where),
            worker_bits=_int(raw, "workerBits", 5, where),
            sequence_bits=_int(raw, "sequenceBits", 12, where),
            epoch_ms=epoch_ms,
        )
    except errors.InvalidLayout as e:
        raise errors.InvalidPool(f"{where}: {e.message}") from e
    tolerance = _int(raw, "clockBackwardToleranceMs", DEFAULT_TOLERANCE_MS, where)
    if not 0 <= tolerance <= 1000:
        raise errors.InvalidPool(
            f"{where}.clockBackwardToleranceMs must be 0..1000, got {tolerance}"
        )
    return layout, tolerance


def parse_spec(
    spec: Mapping[str, object],
    *,
    namespace: str,
    name: str,
    previous: PoolConfig | None = None,
    now_ms: int | None = None,
) -> PoolConfig:
    """Validate a `NebulaIdPool` spec and return its config.

    `previous` is the config already stored for this pool, if any: datacenters
    without an `id` keep their old one or get the lowest ID never used, and the
    update is refused when it would break uniqueness (see `check_update`).
    `now_ms` enables the check that the epoch is not in the future.
    """
    if not DNS_LABEL.match(name):
        raise errors.InvalidPool(f"pool name {name!r} must be a DNS label")
    algorithm = spec.get("algorithm", "snowflake")
    if algorithm not in ALGORITHMS:
        raise errors.InvalidPool(
            f"spec.algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}"
        )
    layout, tolerance = parse_layout(_mapping(spec.get("snowflake"), "spec.snowflake"))
    if now_ms is not None:
        try:
            layout.check_epoch(now_ms)
        except errors.InvalidLayout as e:
            raise errors.InvalidPool(f"spec.snowflake: {e.message}") from e
    previous_snowflake = handover.parse(
        _mapping(spec.get("snowflake"), "spec.snowflake"), layout, now_ms=now_ms
    )

    failover = parse_failover(_mapping(spec.get("failover"), "spec.failover"), "spec.failover")
    datacenters = _parse_datacenters(spec, layout, previous, failover)
    tags = _parse_tags(spec)
    if algorithm == "segment" and not tags:
        raise errors.InvalidPool("a segment pool needs at least one tag in spec.segment.tags")

    lease = _mapping(spec.get("lease"), "spec.lease")
    ttl = _int(lease, "ttlSeconds", DEFAULT_TTL_SECONDS, "spec.lease")
    if not 2 <= ttl <= 300:
        raise errors.InvalidPool(f"spec.lease.ttlSeconds must be 2..300, got {ttl}")

    config = PoolConfig(
        namespace=namespace,
        name=name,
        algorithm=algorithm,
        layout=layout,
        clock_backward_tolerance_ms=tolerance,
        datacenters=datacenters,
        tags=tags,
        lease_ttl_seconds=ttl,
        sidecar=_parse_sidecar(_mapping(spec.get("sidecar"), "spec.sidecar")),
        retired_datacenter_ids=_retired(previous, datacenters),
        failover=failover,
        previous_snowflake=previous_snowflake,
    )
    if previous is not None:
        check_update(previous, config)
    return config


def _parse_datacenters(
    spec: Mapping[str, object],
    layout: layouts.SnowflakeLayout,
    previous: PoolConfig | None,
    failover: failovers.FailoverSettings,
) -> tuple[Datacenter, ...]:
    raw_dcs = _list(spec.get("datacenters"), "spec.datacenters") or [{"name": "default"}]
    old_ids = {dc.name: dc.id for dc in previous.datacenters} if previous else {}
    taken = set(previous.retired_datacenter_ids) if previous else set()
    taken |= set(old_ids.values())
    names: set[str] = set()
    explicit: dict[int, str] = {}
    parsed: list[tuple[str, int | None, SecretRef | None, failovers.FailoverSettings | None]] = []
    for i, raw in enumerate(raw_dcs):
        where = f"spec.datacenters[{i}]"
        dc = _mapping(raw, where)
        dc_name = dc.get("name")
        if not isinstance(dc_name, str) or not DNS_LABEL.match(dc_name):
            raise errors.InvalidPool(f"{where}.name must be a DNS label, got {dc_name!r}")
        if dc_name in names:
            raise errors.InvalidPool(f"datacenter name {dc_name!r} appears twice")
        names.add(dc_name)
        dc_id: int | None = None
        if "id" in dc and dc["id"] is not None:
            dc_id = _int(dc, "id", 0, where)
            if not 0 <= dc_id <= layout.max_datacenter:
                raise errors.InvalidPool(
                    f"{where}.id {dc_id} does not fit in datacenterBits={layout.datacenter_bits} "
                    f"(0..{layout.max_datacenter})"
                )
            if dc_id in explicit:
                raise errors.InvalidPool(
                    f"datacenters {explicit[dc_id]!r} and {dc_name!r} both have id {dc_id}"
                )
            explicit[dc_id] = dc_name
        elif dc_name in old_ids:
            dc_id = old_ids[dc_name]
            explicit[dc_id] = dc_name
        ref = _secret_ref(dc.get("databaseSecretRef"), f"{where}.databaseSecretRef")
        own = None
        if dc.get("failover") is not None:
            own = parse_failover(
                _mapping(dc["failover"], f"{where}.failover"),
                f"{where}.failover",
                base=failover,
                keys=_DATACENTER_FAILOVER_KEYS,
            )
        parsed.append((dc_name, dc_id, ref, own))
    result: list[Datacenter] = []
    for dc_name, dc_id, ref, own in parsed:
        if dc_id is None:
            dc_id = next(
                (
                    i
                    for i in range(layout.max_datacenter + 1)
                    if i not in taken and i not in explicit
                ),
                None,
            )
            if dc_id is None:
                raise errors.InvalidPool(
                    f"no datacenter ID left for {dc_name!r} "
                    f"in datacenterBits={layout.datacenter_bits}"
                )
            explicit[dc_id] = dc_name
        result.append(Datacenter(name=dc_name, id=dc_id, database_secret_ref=ref, failover=own))
    return tuple(result)


def _parse_tags(spec: Mapping[str, object]) -> tuple[Tag, ...]:
    segment = _mapping(spec.get("segment"), "spec.segment")
    tags: list[Tag] = []
    seen: set[str] = set()
    for i, raw in enumerate(_list(segment.get("tags"), "spec.segment.tags")):
        where = f"spec.segment.tags[{i}]"
        tag = _mapping(raw, where)
        tag_name = tag.get("name")
        step = _int(tag, "step", DEFAULT_STEP, where)
        max_step = _int(tag, "maxStep", tags_mod.default_max_step(step), where)
        try:
            parsed = Tag(name=tag_name, step=step, max_step=max_step)  # type: ignore[arg-type]
        except errors.InvalidArgument as e:
            raise errors.InvalidPool(f"{where}.{e.message}") from e
        if tag_name in seen:
            raise errors.InvalidPool(f"segment tag {tag_name!r} appears twice")
        seen.add(parsed.name)
        tags.append(parsed)
    return tuple(tags)


def _parse_sidecar(raw: Mapping[str, object]) -> SidecarSpec:
    where = "spec.sidecar"
    port = _int(raw, "port", DEFAULT_PORT, where)
    if not 1 <= port <= 65535:
        raise errors.InvalidPool(f"{where}.port must be 1..65535, got {port}")
    batch = _int(raw, "maxBatchSize", DEFAULT_MAX_BATCH, where)
    if not 1 <= batch <= 100_000:
        raise errors.InvalidPool(f"{where}.maxBatchSize must be 1..100000, got {batch}")
    image = raw.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        raise errors.InvalidPool(f"{where}.image must be a non-empty string")
    rate_limit = None
    if raw.get("rateLimit") is not None:
        rl = _mapping(raw["rateLimit"], f"{where}.rateLimit")
        rps = rl.get("requestsPerSecond")
        if isinstance(rps, bool) or not isinstance(rps, int | float) or rps <= 0:
            raise errors.InvalidPool(f"{where}.rateLimit.requestsPerSecond must be positive")
        burst = _int(rl, "burst", max(1, int(rps)), f"{where}.rateLimit")
        if burst < 1:
            raise errors.InvalidPool(f"{where}.rateLimit.burst must be at least 1")
        rate_limit = RateLimit(requests_per_second=float(rps), burst=burst)
    resources = raw.get("resources")
    return SidecarSpec(
        image=image,
        port=port,
        max_batch_size=batch,
        # Parsed JSON or YAML holds JSON values only; Kubernetes validates the rest.
        resources=cast(Mapping[str, JsonValue], _mapping(resources, f"{where}.resources"))
        if resources is not None
        else None,
        auth_secret_ref=_secret_ref(raw.get("authSecretRef"), f"{where}.authSecretRef"),
        rate_limit=rate_limit,
    )


def _retired(previous: PoolConfig | None, current: tuple[Datacenter, ...]) -> tuple[int, ...]:
    if previous is None:
        return ()
    live = {dc.id for dc in current}
    gone = {dc.id for dc in previous.datacenters} - live
    return tuple(sorted(set(previous.retired_datacenter_ids) | gone))


def parse_document(
    doc: Mapping[str, object], *, default_namespace: str = "default"
) -> tuple[str, str, Mapping[str, object]]:
    """A `NebulaIdPool` YAML document as (namespace, name, spec)."""
    if doc.get("kind") not in (None, crd.KIND):
        raise errors.InvalidPool(f"expected kind {crd.KIND}, got {doc.get('kind')!r}")
    meta = _mapping(doc.get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise errors.InvalidPool("metadata.name is required")
    namespace = meta.get("namespace") or default_namespace
    if not isinstance(namespace, str):
        raise errors.InvalidPool("metadata.namespace must be a string")
    return namespace, name, _mapping(doc.get("spec"), "spec")


def from_json(doc: Mapping[str, object]) -> PoolConfig:
    """Read back a config written by `PoolConfig.to_json` (from etcd or the local cache)."""
    if doc.get("format") != CONFIG_FORMAT:
        raise errors.ConfigError(f"unsupported pool config format {doc.get('format')!r}")
    spec = dict(doc)
    namespace, name = str(doc["namespace"]), str(doc["name"])
    config = parse_spec(spec, namespace=namespace, name=name)
    return dataclasses.replace(
        config,
        retired_datacenter_ids=tuple(
            _stored_int(i, "retiredDatacenterIds")
            for i in _list(doc.get("retiredDatacenterIds"), "retiredDatacenterIds")
        ),
        generation=_stored_int(doc.get("generation", 0), "generation"),
    )


def _stored_int(value: object, where: str) -> int:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return int(value)
    raise errors.ConfigError(f"the stored pool config's {where} must be integers, got {value!r}")
