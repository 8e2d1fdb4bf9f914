"""The operator's judgement of each datacenter, from a stream of raw probes.

One failed `SELECT 1` does not make a datacenter unhealthy, and one success does
not make it healthy again: a datacenter becomes unhealthy after
`failure_threshold` consecutive failed probes, and healthy again only after its
probes have passed without interruption for `recovery_s` seconds (both from the
pool's `spec.failover`, per datacenter).  The sidecars follow the judged health,
so this is what keeps a flapping database from moving every sidecar back and
forth.

Pure: no I/O, time from an injected monotonic clock.  One `Detector` lives as
long as the operator's health loop of one pool; a new leader starts with
nothing known and judges from its own probes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from nebula_id import errors
from nebula_id.core import failover as failovers
from nebula_id.core import pool as pools
from nebula_id_operator import status


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """A datacenter whose judged health flipped at this probe."""

    name: str
    healthy: bool
    reason: str


@dataclasses.dataclass(slots=True)
class _State:
    healthy: bool | None = None  # None until the first probe
    failures: int = 0
    passing_since: float | None = None
    reason: str = ""
    since: str = ""  # RFC 3339 time of the last transition


class Detector:
    """Consecutive-failure and recovery-window judgement of every datacenter of a pool."""

    def __init__(self, *, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._states: dict[str, _State] = {}

    def observe(
        self, config: pools.PoolConfig, probes: Sequence[status.DatacenterHealth]
    ) -> tuple[list[status.DatacenterHealth], list[Transition]]:
        """The judged health of every probed datacenter, and the ones that flipped."""
        now = self._monotonic()
        judged: list[status.DatacenterHealth] = []
        flipped: list[Transition] = []
        names = {probe.name for probe in probes}
        for gone in set(self._states) - names:
            del self._states[gone]
        for probe in probes:
            settings = _settings(config, probe.name)
            state = self._states.setdefault(probe.name, _State())
            before = state.healthy
            if probe.healthy:
                state.failures = 0
                if state.passing_since is None:
                    state.passing_since = now
                if state.healthy is None or (
                    not state.healthy and now - state.passing_since >= settings.recovery_s
                ):
                    state.healthy = True
                    state.reason = probe.reason
                elif state.healthy:
                    state.reason = probe.reason
                else:
                    waited = now - state.passing_since
                    state.reason = (
                        f"recovering: probes pass for {waited:.1f} s of the "
                        f"{settings.recovery_s:g} s recovery window"
                    )
            else:
                state.failures += 1
                state.passing_since = None
                if state.healthy is not False and state.failures >= settings.failure_threshold:
                    state.healthy = False
                if state.healthy is False:
                    state.reason = probe.reason
                else:
                    state.reason = (
                        f"{state.failures} of {settings.failure_threshold} failed probes: "
                        f"{probe.reason}"
                    )[:500]
                    state.healthy = True if state.healthy is None else state.healthy
            if before is not state.healthy:
                state.since = probe.checked_at
                if before is not None or state.healthy is False:
                    flipped.append(Transition(probe.name, bool(state.healthy), state.reason))
            judged.append(
                status.DatacenterHealth(
                    name=probe.name,
                    healthy=bool(state.healthy),
                    reason=state.reason,
                    checked_at=probe.checked_at,
                    consecutive_failures=state.failures,
                    last_transition_time=state.since,
                )
            )
        return judged, flipped


def _settings(config: pools.PoolConfig, name: str) -> failovers.FailoverSettings:
    try:
        return config.failover_for(name)
    except errors.ConfigError:  # a datacenter removed between the probe and now
        return config.failover
