"""Pure builders of a pool's status: conditions, phase, printer fields.

Handlers gather facts (did the etcd write work, which database failed, how many
workers hold a claim) into the small values below; these functions turn them
into the `status` patch.  No I/O, no kopf: the same facts always give the same
patch, which is what the unit tests check.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TypedDict

from nebula_id.core import jsontypes
from nebula_id.core import pool as pools
from nebula_id.core.jsontypes import JsonObject
from nebula_id_operator import advice

READY = "Ready"
ETCD_CONFIGURED = "EtcdConfigured"
DATABASE_PROVISIONED = "DatabaseProvisioned"
DATACENTERS_HEALTHY = "DatacentersHealthy"
CONDITION_TYPES = (READY, ETCD_CONFIGURED, DATABASE_PROVISIONED, DATACENTERS_HEALTHY)

PHASE_PENDING = "Pending"
PHASE_READY = "Ready"
PHASE_DEGRADED = "Degraded"
PHASE_FAILED = "Failed"


class Condition(TypedDict):
    type: str
    status: str
    reason: str
    message: str
    observedGeneration: int
    lastTransitionTime: str


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one concern: True, False, or None for "not known yet"."""

    ok: bool | None
    reason: str
    message: str = ""
    permanent: bool = False
    """A failure that retrying cannot fix until something changes (spec, Secret)."""

    @classmethod
    def passed(cls, reason: str, message: str = "") -> Check:
        return cls(ok=True, reason=reason, message=message)

    @classmethod
    def failed(cls, reason: str, message: str, *, permanent: bool = False) -> Check:
        return cls(ok=False, reason=reason, message=message, permanent=permanent)

    @classmethod
    def unknown(cls, reason: str, message: str = "") -> Check:
        return cls(ok=None, reason=reason, message=message)


@dataclasses.dataclass(frozen=True, slots=True)
class DatacenterHealth:
    """What the last check of one datacenter's database found."""

    name: str
    healthy: bool
    reason: str
    checked_at: str
    consecutive_failures: int = 0
    last_transition_time: str = ""


def rfc3339(wall_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(wall_ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _status_text(ok: bool | None) -> str:
    return "Unknown" if ok is None else ("True" if ok else "False")


def condition(
    type_: str,
    check: Check,
    *,
    generation: int,
    now: str,
    previous: Sequence[Mapping[str, object]] = (),
) -> Condition:
    """A Kubernetes condition; `lastTransitionTime` moves only when the status flips."""
    status = _status_text(check.ok)
    old = next((c for c in previous if c.get("type") == type_), None)
    since = now
    if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
        since = str(old["lastTransitionTime"])
    return Condition(
        type=type_,
        status=status,
        reason=check.reason,
        message=check.message[:4000],
        observedGeneration=generation,
        lastTransitionTime=since,
    )


def ready_check(etcd: Check, database: Check) -> Check:
    """Ready when the config is in etcd and every database is provisioned."""
    steps = (
        (etcd, "Sidecars cannot start: the pool's config is not in etcd."),
        (database, "Segment IDs cannot be served: the segment tables are not set up."),
    )
    for check, meaning in steps:
        if check.ok is False:
            message = f"{meaning} {check.message}"
            return Check.failed(check.reason, message, permanent=check.permanent)
    for check, _ in steps:
        if check.ok is None:
            return Check.unknown(check.reason, check.message)
    return Check.passed(
        "Reconciled",
        "The pool's config is in etcd and its databases are ready: pods annotated "
        "nebula-id.io/pool with this pool's name get a sidecar that serves IDs.",
    )


def health_check(health: Sequence[DatacenterHealth]) -> Check:
    """The `DatacentersHealthy` condition from the last health of each datacenter."""
    if not health:
        return Check.unknown("NotChecked", "the datacenters have not been checked yet")
    sick = [h for h in health if not h.healthy]
    if not sick:
        return Check.passed("AllHealthy", f"{len(health)} of {len(health)} datacenters are healthy")
    detail = "; ".join(f"{h.name}: {h.reason}" for h in sick)
    message = f"{len(sick)} of {len(health)} unhealthy: {detail}"
    return Check.failed(
        "Unhealthy", advice.with_next_step(message, advice.unhealthy_hint([h.name for h in sick]))
    )


def phase(ready: Check, healthy: Check) -> str:
    if ready.ok is True:
        return PHASE_DEGRADED if healthy.ok is False else PHASE_READY
    if ready.ok is False and ready.permanent:
        return PHASE_FAILED
    return PHASE_PENDING


def worker_capacity(config: pools.PoolConfig) -> int:
    """Worker IDs the layout allows over all datacenters."""
    return config.layout.worker_capacity * len(config.datacenters)


def workers_status(active: int, capacity: int) -> JsonObject:
    return {"active": active, "capacity": capacity, "summary": f"{active}/{capacity}"}


def datacenters_status(
    config: pools.PoolConfig,
    health: Sequence[DatacenterHealth] = (),
    active_by_datacenter: Mapping[str, int] | None = None,
) -> list[JsonObject]:
    """`status.datacenters[]`: the assigned IDs, and health when it is known."""
    by_name = {h.name: h for h in health}
    rows: list[JsonObject] = []
    for dc in config.datacenters:
        row: JsonObject = {"name": dc.name, "id": dc.id}
        known = by_name.get(dc.name)
        if known is not None:
            row |= {"healthy": known.healthy, "reason": known.reason, "checkedAt": known.checked_at}
            row["consecutiveFailures"] = known.consecutive_failures
            if known.last_transition_time:
                row["lastTransitionTime"] = known.last_transition_time
        if active_by_datacenter is not None:
            row["activeWorkers"] = active_by_datacenter.get(dc.name, 0)
        rows.append(row)
    return rows


def datacenters_summary(config: pools.PoolConfig, health: Sequence[DatacenterHealth]) -> str:
    """`healthy/total` for the printer column; unchecked datacenters do not count."""
    by_name = {h.name: h for h in health}
    healthy = sum(1 for dc in config.datacenters if (h := by_name.get(dc.name)) and h.healthy)
    return f"{healthy}/{len(config.datacenters)}"


def replace_condition(
    conditions: Sequence[Mapping[str, object]], new: Condition
) -> list[JsonObject]:
    """`conditions` with the one of `new`'s type replaced, in the canonical order."""
    merged: dict[str, JsonObject] = {str(c.get("type")): jsontypes.copy(c) for c in conditions}
    merged[new["type"]] = jsontypes.copy(new)
    ordered = [merged.pop(t) for t in CONDITION_TYPES if t in merged]
    return ordered + [merged[t] for t in sorted(merged)]


def reconcile_status(
    *,
    config: pools.PoolConfig | None,
    etcd: Check,
    database: Check,
    generation: int,
    now: str,
    previous: Mapping[str, object],
    config_revision: int | None = None,
) -> JsonObject:
    """The status patch after a reconcile of the spec."""
    old_conditions = jsontypes.as_objects(previous.get("conditions"))
    ready = ready_check(etcd, database)
    conditions = [jsontypes.copy(c) for c in old_conditions]
    for type_, check in ((ETCD_CONFIGURED, etcd), (DATABASE_PROVISIONED, database), (READY, ready)):
        new = condition(type_, check, generation=generation, now=now, previous=old_conditions)
        conditions = replace_condition(conditions, new)
    healthy = _existing_check(old_conditions, DATACENTERS_HEALTHY)
    patch: JsonObject = {
        "conditions": conditions,
        "phase": phase(ready, healthy),
        "observedGeneration": generation,
    }
    if config is not None:
        health = health_from_status(previous)
        patch["datacenters"] = datacenters_status(config, health)
        patch["datacentersHealthy"] = datacenters_summary(config, health)
        patch["retiredDatacenterIds"] = list(config.retired_datacenter_ids)
        # status.workers belongs to the workers daemon; touch it only when the
        # capacity changes, so a reconcile never writes back a stale count.
        old_workers = jsontypes.as_object(previous.get("workers")) or {}
        if old_workers.get("capacity") != worker_capacity(config):
            active = jsontypes.as_int(old_workers.get("active"))
            patch["workers"] = workers_status(active, worker_capacity(config))
    if config_revision is not None:
        patch["configRevision"] = config_revision
    return patch


def health_status(
    *,
    config: pools.PoolConfig,
    health: Sequence[DatacenterHealth],
    generation: int,
    now: str,
    previous: Mapping[str, object],
) -> JsonObject:
    """The status patch after a health check."""
    old_conditions = jsontypes.as_objects(previous.get("conditions"))
    healthy = health_check(health)
    new = condition(
        DATACENTERS_HEALTHY, healthy, generation=generation, now=now, previous=old_conditions
    )
    ready = _existing_check(old_conditions, READY)
    old_phase = previous.get("phase")
    return {
        "conditions": replace_condition(old_conditions, new),
        # A failed Ready keeps its phase: only the reconcile knows if it was permanent.
        "phase": phase(ready, healthy)
        if ready.ok is True
        else (old_phase if isinstance(old_phase, str) else PHASE_PENDING),
        "datacenters": datacenters_status(config, health),
        "datacentersHealthy": datacenters_summary(config, health),
    }


def health_from_status(status: Mapping[str, object]) -> list[DatacenterHealth]:
    """The health last written to `status.datacenters`, to carry it over."""
    return [
        DatacenterHealth(
            name=str(row["name"]),
            healthy=bool(row["healthy"]),
            reason=str(row.get("reason", "")),
            checked_at=str(row.get("checkedAt", "")),
            consecutive_failures=jsontypes.as_int(row.get("consecutiveFailures")),
            last_transition_time=str(row.get("lastTransitionTime", "")),
        )
        for row in jsontypes.as_objects(status.get("datacenters"))
        if "healthy" in row and "name" in row
    ]


def _existing_check(conditions: Sequence[Mapping[str, object]], type_: str) -> Check:
    old = next((c for c in conditions if c.get("type") == type_), None)
    if old is None:
        return Check.unknown("NotChecked")
    status = old.get("status")
    ok = True if status == "True" else (False if status == "False" else None)
    return Check(ok=ok, reason=str(old.get("reason", "")), message=str(old.get("message", "")))


def is_ready(status: Mapping[str, object], generation: int) -> bool:
    """True when the last reconcile of this generation ended Ready."""
    if status.get("observedGeneration") != generation:
        return False
    return _existing_check(jsontypes.as_objects(status.get("conditions")), READY).ok is True
