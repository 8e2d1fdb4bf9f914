"""Local overrides of a pool's failover settings (``spec.failover``)."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from nebula_id import errors
from nebula_id.config import loader
from nebula_id.core import failover as failovers

T = TypeVar("T")


def _or(override: T | None, own: T) -> T:
    return own if override is None else override


@dataclasses.dataclass(frozen=True, slots=True)
class FailoverOverrides:
    """Each value, when set, replaces the pool's (and each datacenter's) own."""

    failure_threshold: int | None = None
    """Failed calls before a datacenter counts as down."""
    hold_down_seconds: float | None = None
    """Healthy time before returning to the own datacenter."""
    probe_interval_seconds: float | None = None
    """Time between probes of a down datacenter."""
    health_max_age_seconds: float | None = None
    """Published health older than this is ignored."""

    def __post_init__(self) -> None:
        try:
            self.apply(failovers.FailoverSettings())
        except errors.ConfigError as e:
            raise errors.ConfigError(f"failover settings: {e.message}") from e

    def apply(self, pool_settings: failovers.FailoverSettings) -> failovers.FailoverSettings:
        """`pool_settings` (the pool's, or a datacenter's) with these overrides."""
        given = (
            self.failure_threshold,
            self.hold_down_seconds,
            self.probe_interval_seconds,
            self.health_max_age_seconds,
        )
        if all(value is None for value in given):
            return pool_settings
        base = pool_settings
        return dataclasses.replace(
            base,
            failure_threshold=_or(self.failure_threshold, base.failure_threshold),
            hold_down_s=_or(self.hold_down_seconds, base.hold_down_s),
            probe_interval_s=_or(self.probe_interval_seconds, base.probe_interval_s),
            health_max_age_s=_or(self.health_max_age_seconds, base.health_max_age_s),
        )


FIELDS: tuple[loader.Field[object], ...] = (
    loader.Field(
        "failover_failure_threshold", loader.integer, ("failover.failure_threshold",),
        "failed calls before a datacenter is down (default: the pool's)",
        attr="failure_threshold",
    ),
    loader.Field(
        "failover_hold_down_seconds", loader.number, ("failover.hold_down_seconds",),
        "healthy time before returning to the own datacenter (default: the pool's)",
        attr="hold_down_seconds",
    ),
    loader.Field(
        "failover_probe_interval_seconds", loader.number, ("failover.probe_interval_seconds",),
        "time between probes of a down datacenter (default: the pool's)",
        attr="probe_interval_seconds",
    ),
    loader.Field(
        "failover_health_max_age_seconds", loader.number, ("failover.health_max_age_seconds",),
        "ignore published health older than this (default: the pool's)",
        attr="health_max_age_seconds",
    ),
)  # fmt: skip
