"""The Snowflake source of cluster mode: a generator that is only live while its lease is.

The holder (`nebula_id.etcd.worker`) moves it between states as it claims, keeps alive,
loses and re-claims a worker ID; the HTTP layer only sees the `SnowflakeSource`
Protocol.  Refusals carry the public 503 reasons: `worker_ids_exhausted` when every ID
is taken, `lease_lost` when the lease cannot be proven, `not_ready` while claiming or
waiting past a previous holder's mark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nebula_id import clock as clocks
from nebula_id import errors
from nebula_id.core import layout as layouts
from nebula_id.core import snowflake
from nebula_id.core.jsontypes import JsonObject

NOT_READY = errors.NotReady.reason
LEASE_LOST = errors.LeaseLost.reason
EXHAUSTED = errors.WorkerIdsExhausted.reason


class WorkerMetrics:
    """The worker-ID metrics, on the registry the app passes in."""

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        self.claims = prometheus_client.Counter(
            "nebula_id_worker_claims",
            "Worker IDs claimed under an etcd lease",
            registry=registry,
        )
        self.leases_lost = prometheus_client.Counter(
            "nebula_id_worker_leases_lost",
            "Leases that expired or whose claim was taken away while held",
            registry=registry,
        )
        self.fence_refusals = prometheus_client.Counter(
            "nebula_id_snowflake_fence_refusals",
            "Snowflake requests refused because the lease could not be proven",
            registry=registry,
        )
        self.clock_refusals = prometheus_client.Counter(
            "nebula_id_snowflake_clock_refusals",
            "Snowflake requests refused because the clock moved back beyond the tolerance",
            registry=registry,
        )
        self.mark_wait_seconds = prometheus_client.Counter(
            "nebula_id_snowflake_mark_wait_seconds",
            "Seconds a new holder had to wait for its clock to pass the stored high-water mark",
            registry=registry,
        )
        self.clock_wait_seconds: Callable[[], float] = lambda: 0.0
        """Seconds spent waiting out clock rollbacks; the source sets the reader."""
        self.lease_remaining_seconds: Callable[[], float] = lambda: 0.0
        """Seconds the lease can still be proven valid; the source sets the reader."""
        registry.register(_ReaderCollector(self))
        self.exhausted = prometheus_client.Gauge(
            "nebula_id_worker_ids_exhausted",
            "1 while every worker ID of the datacenter is claimed by someone else",
            registry=registry,
        )
        self.worker = prometheus_client.Gauge(
            "nebula_id_worker_id",
            "The worker ID held now, or -1",
            registry=registry,
        )
        self.worker.set(-1)


class _ReaderCollector(Collector):
    """The worker metrics that are read from the source when scraped."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "nebula_id_snowflake_clock_wait_seconds",
            "Seconds spent waiting out clock rollbacks within the tolerance",
            value=self._metrics.clock_wait_seconds(),
        )
        yield GaugeMetricFamily(
            "nebula_id_worker_lease_remaining_seconds",
            "Seconds the etcd lease behind the worker ID can still be proven valid; "
            "0 when no lease is held (Snowflake then answers 503 lease_lost)",
            value=self._metrics.lease_remaining_seconds(),
        )


class LeasedSnowflake:
    """Implements `nebula_id.sources.SnowflakeSource` for a leased worker ID."""

    def __init__(
        self,
        *,
        layout: layouts.SnowflakeLayout,
        pool_ref: str,
        datacenter_name: str,
        datacenter_id: int,
        clock: clocks.Clock,
        metrics: WorkerMetrics,
        issue_after_ms: int | None = None,
    ) -> None:
        self._layout = layout
        self._issue_after_ms = issue_after_ms
        self._pool_ref = pool_ref
        self._datacenter_name = datacenter_name
        self._datacenter_id = datacenter_id
        self._clock = clock
        self.metrics = metrics
        self._generator: snowflake.SnowflakeGenerator | None = None
        self._state = NOT_READY
        self._message = "claiming a worker ID"
        self._lease_id: int | None = None
        self._lease_deadline: float | None = None
        self._wait_past_ms = 0
        self._clock_wait_ms_retired = 0.0
        metrics.clock_wait_seconds = self._clock_wait_seconds
        metrics.lease_remaining_seconds = self._lease_remaining_seconds

    # -- SnowflakeSource ----------------------------------------------------------------

    @property
    def layout(self) -> layouts.SnowflakeLayout:
        return self._layout

    def next_id(self) -> int:
        generator = self._generator
        if generator is None:
            raise self._refusal()
        try:
            return generator.next_id()
        except errors.LeaseLost:
            self.metrics.fence_refusals.inc()
            raise
        except errors.ClockMovedBackward:
            self.metrics.clock_refusals.inc()
            raise

    def next_ids(self, count: int) -> list[int]:
        generator = self._generator
        if generator is None:
            raise self._refusal()
        try:
            return generator.next_ids(count)
        except errors.LeaseLost:
            self.metrics.fence_refusals.inc()
            raise
        except errors.ClockMovedBackward:
            self.metrics.clock_refusals.inc()
            raise

    def ready_reason(self) -> str | None:
        generator = self._generator
        if generator is None:
            return self._state
        deadline = self._lease_deadline
        if deadline is None or self._clock.monotonic() >= deadline:
            return LEASE_LOST
        mark = generator.high_water_mark_ms
        now = self._clock.wall_ms()
        if now <= self._wait_past_ms or mark is None or now > mark:
            return NOT_READY
        return None

    def info(self) -> JsonObject:
        generator = self._generator
        deadline = self._lease_deadline
        info: JsonObject = {
            "pool": self._pool_ref,
            "datacenter": self._datacenter_name,
            "datacenterId": self._datacenter_id,
            "worker": generator.worker if generator else None,
            "state": self.ready_reason() or "serving",
            "message": None if generator else self._message,
            "lease": {
                "id": f"{self._lease_id:x}" if self._lease_id else None,
                "deadlineInSeconds": (
                    None if deadline is None else round(deadline - self._clock.monotonic(), 3)
                ),
            },
        }
        if generator is not None:
            info["generator"] = generator.info()
        return info

    # -- driven by the holder -------------------------------------------------------------

    @property
    def generator(self) -> snowflake.SnowflakeGenerator | None:
        return self._generator

    def set_state(self, reason: str, message: str) -> None:
        """Not serving, for `reason` (a public 503 reason)."""
        self._state = reason
        self._message = message
        self.metrics.exhausted.set(1 if reason == EXHAUSTED else 0)

    def start(
        self,
        *,
        worker: int,
        lease_id: int,
        tolerance_ms: int,
        wait_past_ms: int,
        mark_ms: int,
        lease_deadline: float,
    ) -> snowflake.SnowflakeGenerator:
        """Serve with a freshly claimed worker ID whose mark `mark_ms` is persisted."""
        self.stop(LEASE_LOST, "replaced by a new claim")
        generator = snowflake.SnowflakeGenerator(
            self._layout,
            datacenter=self._datacenter_id,
            worker=worker,
            clock=self._clock,
            tolerance_ms=tolerance_ms,
            require_lease=True,
            issue_after_ms=self._issue_after_ms,
        )
        generator.wait_past(wait_past_ms)
        generator.allow_until(mark_ms)
        generator.set_lease_deadline(lease_deadline)
        self._wait_past_ms = wait_past_ms
        self._lease_id = lease_id
        self._lease_deadline = lease_deadline
        self._generator = generator
        self.metrics.exhausted.set(0)
        self.metrics.worker.set(worker)
        return generator

    def extend(self, *, mark_ms: int, lease_deadline: float) -> None:
        """A keepalive and a fenced mark write both succeeded."""
        generator = self._generator
        if generator is None:
            return
        generator.allow_until(mark_ms)
        generator.set_lease_deadline(lease_deadline)
        self._lease_deadline = lease_deadline

    def stop(self, reason: str, message: str) -> snowflake.SnowflakeGenerator | None:
        """Issue nothing more; returns the retired generator (for its last timestamp)."""
        generator = self._generator
        if generator is not None:
            generator.set_lease_deadline(None)
            self._clock_wait_ms_retired += generator.clock_wait_ms_total
        self._generator = None
        self._lease_deadline = None
        self._lease_id = None
        self.metrics.worker.set(-1)
        self.set_state(reason, message)
        return generator

    # -- helpers ------------------------------------------------------------------------

    def _refusal(self) -> errors.Unavailable:
        if self._state == EXHAUSTED:
            return errors.WorkerIdsExhausted(
                f"every worker ID of datacenter {self._datacenter_name!r} is held: {self._message}",
                retry_after=1.0,
            )
        if self._state == LEASE_LOST:
            self.metrics.fence_refusals.inc()
            return errors.LeaseLost(self._message, retry_after=1.0)
        return errors.NotReady(self._message, retry_after=0.5)

    def _lease_remaining_seconds(self) -> float:
        deadline = self._lease_deadline
        if deadline is None:
            return 0.0
        return max(0.0, deadline - self._clock.monotonic())

    def _clock_wait_seconds(self) -> float:
        generator = self._generator
        current = generator.clock_wait_ms_total if generator else 0.0
        return (self._clock_wait_ms_retired + current) / 1000
