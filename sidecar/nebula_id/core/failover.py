"""Which datacenter's database the next segment range comes from.

Pure: no I/O, time from an injected `Clock` (monotonic seconds).  The
PostgreSQL adapter tells it about every allocation and probe (success or
failure) and about the health the operator publishes in etcd; it answers with
the order in which to try the datacenters.

The rules:

* the preferred datacenter (the sidecar's own) is used while it is usable;
* a datacenter is unusable after `failure_threshold` consecutive failures, or
  while the published health says it is unhealthy;
* having left the preferred datacenter, the sidecar returns to it only after it
  has been seen healthy, without interruption, for `hold_down_s` seconds, so a
  flapping database does not make ranges bounce between datacenters;
* when nothing is usable, every datacenter is still tried in order: trying a
  database can never produce a duplicate, so refusing to try would only turn an
  outage into a longer one.

Switching is always safe for uniqueness, because every datacenter's counter
lives in its own high bits (see `nebula_id.storage.postgres`); these rules are
about latency and locality, not correctness.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from nebula_id import errors
from nebula_id.clock import Clock
from nebula_id.core.jsontypes import JsonObject

DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_HOLD_DOWN_S = 30.0
DEFAULT_RECOVERY_S = 10.0
DEFAULT_PROBE_INTERVAL_S = 2.0
DEFAULT_HEALTH_MAX_AGE_S = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class FailoverSettings:
    """How eagerly a datacenter is given up and taken back (`spec.failover` of a pool).

    The sidecar uses the threshold, the hold-down, the probe interval and the
    health age; the operator's detector uses the threshold, the recovery window
    and the probe interval.
    """

    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    """Consecutive failed calls (or probes) after which a datacenter counts as down."""

    hold_down_s: float = DEFAULT_HOLD_DOWN_S
    """How long a recovered datacenter must stay healthy before a sidecar prefers it again."""

    recovery_s: float = DEFAULT_RECOVERY_S
    """How long the operator must see a down datacenter pass every probe before it is healthy."""

    probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S
    """Time between two probes of a datacenter (operator) or of a down one (sidecar)."""

    health_max_age_s: float = DEFAULT_HEALTH_MAX_AGE_S
    """Published health older than this is ignored (the operator may be down)."""

    def __post_init__(self) -> None:
        if not 1 <= self.failure_threshold <= 100:
            raise errors.ConfigError(
                f"failover failure_threshold must be 1..100, got {self.failure_threshold}"
            )
        if not 0 <= self.hold_down_s <= 3600:
            raise errors.ConfigError(
                f"failover hold_down_s must be 0..3600, got {self.hold_down_s}"
            )
        if not 0 <= self.recovery_s <= 3600:
            raise errors.ConfigError(f"failover recovery_s must be 0..3600, got {self.recovery_s}")
        if not 0.05 <= self.probe_interval_s <= 300:
            raise errors.ConfigError(
                f"failover probe_interval_s must be 0.05..300, got {self.probe_interval_s}"
            )
        if not 0 < self.health_max_age_s <= 3600:
            raise errors.ConfigError(
                f"failover health_max_age_s must be in (0, 3600], got {self.health_max_age_s}"
            )

    def detection_window_s(self) -> float:
        """The longest time from a datacenter's failure until it is detected as down."""
        return self.failure_threshold * self.probe_interval_s


@dataclasses.dataclass(slots=True)
class _DatacenterState:
    consecutive_failures: int = 0
    down: bool = False  # by our own failure count; cleared by the next success
    published_healthy: bool | None = None  # None: no fresh published health
    published_reason: str = ""
    healthy_since: float | None = None  # monotonic; None while not known healthy


class Failover:
    """The datacenter choice of one sidecar (mutable, one per process)."""

    def __init__(
        self,
        datacenters: Sequence[str],
        *,
        preferred: str,
        clock: Clock,
        settings: FailoverSettings | None = None,
        per_datacenter: Mapping[str, FailoverSettings] | None = None,
    ) -> None:
        if not datacenters:
            raise errors.ConfigError("failover needs at least one datacenter")
        if len(set(datacenters)) != len(datacenters):
            raise errors.ConfigError(f"datacenter names repeat: {list(datacenters)}")
        if preferred not in datacenters:
            raise errors.ConfigError(
                f"preferred datacenter {preferred!r} is not one of {list(datacenters)}"
            )
        self._names = tuple(datacenters)
        self._preferred = preferred
        self._clock = clock
        self._settings = settings or FailoverSettings()
        self._per_datacenter = dict(per_datacenter or {})
        now = clock.monotonic()
        # Until told otherwise every datacenter is presumed healthy since start.
        self._states = {name: _DatacenterState(healthy_since=now) for name in self._names}
        self._current = preferred
        self._switches = 0
        self._switch_reason = "preferred"
        self._switched_at_ms: int | None = None

    @property
    def preferred(self) -> str:
        return self._preferred

    @property
    def datacenters(self) -> tuple[str, ...]:
        return self._names

    @property
    def switches(self) -> int:
        """How often the active datacenter has changed (for a metric)."""
        return self._switches

    @property
    def switch_reason(self) -> str:
        """Why the current datacenter was chosen (the reason of the last switch)."""
        return self._switch_reason

    @property
    def switched_at_ms(self) -> int | None:
        """Wall time (ms) of the last switch; None while the first choice holds."""
        return self._switched_at_ms

    @property
    def settings(self) -> FailoverSettings:
        """The pool-wide settings (probe interval and health age come from here)."""
        return self._settings

    @property
    def per_datacenter(self) -> dict[str, FailoverSettings]:
        """Each datacenter's own settings, where it has them."""
        return dict(self._per_datacenter)

    def update_settings(
        self,
        settings: FailoverSettings,
        per_datacenter: Mapping[str, FailoverSettings] | None = None,
    ) -> None:
        """New settings from a changed pool config; failure counts and timers are kept."""
        self._settings = settings
        self._per_datacenter = dict(per_datacenter or {})
        for name, state in self._states.items():
            if state.consecutive_failures >= self.settings_for(name).failure_threshold:
                state.down = True

    def settings_for(self, name: str) -> FailoverSettings:
        """The settings of one datacenter: its own, else the pool's."""
        return self._per_datacenter.get(name, self._settings)

    def usable(self, name: str) -> bool:
        state = self._states[name]
        return not state.down and state.published_healthy is not False

    def current(self) -> str:
        """The datacenter to allocate from now; re-evaluated on every call."""
        chosen = self._choose()
        if chosen != self._current:
            self._switch_reason = self._why(self._current, chosen)
            self._switched_at_ms = self._clock.wall_ms()
            self._current = chosen
            self._switches += 1
        return chosen

    def order(self) -> list[str]:
        """Every datacenter, best first: the current one, the usable, then the rest."""
        first = self.current()
        usable = [n for n in self._names if n != first and self.usable(n)]
        rest = [n for n in self._names if n != first and not self.usable(n)]
        return [first, *usable, *rest]

    def down(self) -> list[str]:
        """Datacenters we hold as unusable (worth probing to learn of recovery)."""
        return [n for n in self._names if not self.usable(n)]

    def record_success(self, name: str) -> None:
        state = self._states[name]
        state.consecutive_failures = 0
        state.down = False
        if state.healthy_since is None and state.published_healthy is not False:
            state.healthy_since = self._clock.monotonic()

    def record_failure(self, name: str) -> None:
        state = self._states[name]
        state.consecutive_failures += 1
        state.healthy_since = None
        if state.consecutive_failures >= self.settings_for(name).failure_threshold:
            state.down = True

    def observe_health(self, health: Mapping[str, tuple[bool, str] | None]) -> None:
        """The operator's published health: name -> (healthy, reason), None when stale.

        `core.health.judge` turns a published document into this.
        """
        now = self._clock.monotonic()
        for name in self._names:
            state = self._states[name]
            observed = health.get(name)
            if observed is None:
                state.published_healthy = None
                state.published_reason = ""
                continue
            healthy, reason = observed
            state.published_healthy = healthy
            state.published_reason = reason
            if not healthy:
                state.healthy_since = None
            elif state.healthy_since is None and not state.down:
                state.healthy_since = now

    def info(self) -> JsonObject:
        now = self._clock.monotonic()
        return {
            "preferred": self._preferred,
            "current": self._current,
            "switches": self._switches,
            "reason": self._switch_reason,
            "switchedAtMs": self._switched_at_ms,
            "datacenters": {
                name: {
                    "usable": self.usable(name),
                    "consecutiveFailures": state.consecutive_failures,
                    "publishedHealthy": state.published_healthy,
                    "publishedReason": state.published_reason,
                    "healthyForSeconds": (
                        None if state.healthy_since is None else round(now - state.healthy_since, 3)
                    ),
                }
                for name, state in self._states.items()
            },
        }

    def _held_down(self, name: str) -> bool:
        since = self._states[name].healthy_since
        hold_down = self.settings_for(name).hold_down_s
        return since is not None and self._clock.monotonic() - since >= hold_down

    def _why(self, old: str, new: str) -> str:
        """A short reason for leaving `old` for `new`, for /v1/info and a metric label."""
        state = self._states[old]
        if new == self._preferred:
            return "preferred_recovered"
        if state.published_healthy is False:
            return "published_unhealthy"
        if state.down:
            return "failure_threshold"
        return "preferred_unusable"

    def _choose(self) -> str:
        preferred, current = self._preferred, self._current
        if self.usable(preferred) and (
            current == preferred or self._held_down(preferred) or not self.usable(current)
        ):
            return preferred
        if self.usable(current):
            return current
        for name in self._names:
            if self.usable(name):
                return name
        return preferred
