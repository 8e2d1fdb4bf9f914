"""The operator's Prometheus metrics and its probe server.

Metrics live on a registry the caller passes in (tests never touch the global
one).  The probe server is a small aiohttp app on `probe_port`:

- ``/healthz``: the process and its leader-election loop are alive;
- ``/readyz``: the replica does its job: the leader once kopf runs, a standby
  while it can reach etcd (so a rolling update can proceed);
- ``/metrics``: Prometheus text format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable

import prometheus_client
from aiohttp import web

from nebula_id_operator import leader as leaders


@dataclasses.dataclass(frozen=True, slots=True)
class OperatorMetrics:
    reconciles: prometheus_client.Counter
    errors: prometheus_client.Counter
    duration: prometheus_client.Histogram
    leader: prometheus_client.Gauge
    workers_active: prometheus_client.Gauge
    datacenter_healthy: prometheus_client.Gauge
    _datacenters: dict[str, set[str]] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(cls, registry: prometheus_client.CollectorRegistry) -> OperatorMetrics:
        return cls(
            reconciles=prometheus_client.Counter(
                "nebula_id_operator_reconciles",
                "Reconcile passes, by kind (spec, resync, health, workers, delete)",
                ["kind"],
                registry=registry,
            ),
            errors=prometheus_client.Counter(
                "nebula_id_operator_reconcile_errors",
                "Reconcile passes that failed, by kind and reason",
                ["kind", "reason"],
                registry=registry,
            ),
            duration=prometheus_client.Histogram(
                "nebula_id_operator_reconcile_duration_seconds",
                "Duration of reconcile passes, by kind",
                ["kind"],
                registry=registry,
                buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            ),
            leader=prometheus_client.Gauge(
                "nebula_id_operator_leader",
                "1 while this replica holds the leader lease, else 0",
                registry=registry,
            ),
            workers_active=prometheus_client.Gauge(
                "nebula_id_operator_workers_active",
                "Worker IDs held by live sidecars, by pool",
                ["pool"],
                registry=registry,
            ),
            datacenter_healthy=prometheus_client.Gauge(
                "nebula_id_operator_datacenter_healthy",
                "1 when the datacenter's database answered the last health check, else 0",
                ["pool", "datacenter"],
                registry=registry,
            ),
        )

    def datacenter_health(self, pool: str, healthy: dict[str, bool]) -> None:
        """Set the pool's datacenter gauges; datacenters no longer in `healthy` go away."""
        for gone in self._datacenters.get(pool, set()) - set(healthy):
            self.datacenter_healthy.remove(pool, gone)
        for name, ok in healthy.items():
            self.datacenter_healthy.labels(pool, name).set(1 if ok else 0)
        self._datacenters[pool] = set(healthy)

    def forget_pool(self, pool: str) -> None:
        """Drop a deleted pool's series, so no alert fires on a pool that is gone."""
        with contextlib.suppress(KeyError):
            self.workers_active.remove(pool)
        for name in self._datacenters.pop(pool, set()):
            self.datacenter_healthy.remove(pool, name)

    def observe(self, kind: str, started: float, *, error: str | None = None) -> None:
        """Count one pass that began at `started` (time.monotonic())."""
        self.reconciles.labels(kind).inc()
        self.duration.labels(kind).observe(max(0.0, time.monotonic() - started))
        if error is not None:
            self.errors.labels(kind, error).inc()


ProbeState = Callable[[], leaders.ElectionState]


def probe_app(
    registry: prometheus_client.CollectorRegistry, state: ProbeState, kopf_ready: Callable[[], bool]
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        current = state()
        code = 200 if current.alive else 503
        return web.json_response({"alive": current.alive}, status=code)

    async def readyz(_: web.Request) -> web.Response:
        current = state()
        if current.is_leader:
            ready, role = kopf_ready(), "leader"
        else:
            ready, role = current.alive and current.etcd_reachable, "standby"
        body = {"ready": ready, "role": role, "reason": current.reason}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(registry)
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
