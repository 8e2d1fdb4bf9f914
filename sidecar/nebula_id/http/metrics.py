"""Prometheus exposition on an explicitly passed registry.

The hot path counts in `RequestStats` (plain integers); `StatsCollector` turns
them into samples at scrape time.  Adapters register their own metrics on the
same registry, and tests pass a fresh one, so nothing touches global state.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nebula_id import sources
from nebula_id.http import stats as stats_mod


class StatsCollector(Collector):
    """Reads the request counters and source readiness when scraped."""

    def __init__(
        self,
        stats: stats_mod.RequestStats,
        *,
        snowflake: sources.SnowflakeSource | None = None,
        segments: sources.SegmentSource | None = None,
    ) -> None:
        self._stats = stats
        self.snowflake = snowflake
        self.segments = segments

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        ids = CounterMetricFamily(
            "nebula_id_ids_issued", "IDs handed out over HTTP", labels=["algorithm"]
        )
        for algorithm, count in sorted(self._stats.ids.items()):
            ids.add_metric([algorithm], count)
        yield ids
        requests = CounterMetricFamily(
            "nebula_id_id_requests", "Successful ID requests", labels=["algorithm"]
        )
        for algorithm, count in sorted(self._stats.requests.items()):
            requests.add_metric([algorithm], count)
        yield requests
        failures = CounterMetricFamily(
            "nebula_id_http_errors", "Error answers", labels=["status", "code", "reason"]
        )
        for (status, code, reason), count in sorted(self._stats.errors.items()):
            failures.add_metric([str(status), code, reason], count)
        yield failures
        ready = GaugeMetricFamily(
            "nebula_id_source_ready", "1 when the source can serve now", labels=["source"]
        )
        if self.snowflake is not None:
            ready.add_metric(["snowflake"], 0 if self.snowflake.ready_reason() else 1)
        if self.segments is not None:
            ready.add_metric(["segment"], 0 if self.segments.ready_reason() else 1)
        yield ready


def metrics_handler(registry: CollectorRegistry) -> Handler:
    async def metrics(request: web.Request) -> web.Response:
        body = exposition.generate_latest(registry)
        return web.Response(
            body=body,
            headers={"Content-Type": exposition.CONTENT_TYPE_LATEST, "Server": stats_mod.SERVER},
        )

    return metrics
