"""Request latency per route and algorithm, as a Prometheus histogram.

The hot path pays two `perf_counter()` calls, one comparison (a bisect only for
an answer slower than the first bound) and two list/float updates per request,
inline in the timing wrapper: the buckets are plain lists, and
`LatencyCollector` turns them into `nebula_id_http_request_duration_seconds` at
scrape time (a `prometheus_client.Histogram` takes a lock and a label lookup per
observation).  The timing wrapper is a plain function around the (plain) handler, so timing
adds no coroutine to a request that needs no I/O; only an answer that must be
awaited gets one.

Only the ID routes are timed; probes, /metrics and /v1/info are not.  The
time is the handler's, from routing to the response object or the error it
raises (aiohttp's own parsing and writing are not in it).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Iterator

from aiohttp import web
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from nebula_id.http import keys
from nebula_id.http.errors import AnyHandler

METRIC = "nebula_id_http_request_duration_seconds"
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# The ID routes and the algorithm each serves; None: the pool's default algorithm.
TIMED_ROUTES: dict[str, str | None] = {
    "/v1/ids": None,
    "/v1/ids/snowflake": "snowflake",
    "/v1/ids/uuid7": "uuid7",
    "/v1/ids/uuid4": "uuid4",
    "/v1/ids/segment": "segment",
    "/v1/ids/segment/{tag}": "segment",
    "/v1/ids/snowflake/{id}/parse": "snowflake",
}


class Buckets:
    """One histogram series: counts per bucket (the last is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0


class _DefaultSeries:
    """The series of the pool's default algorithm, for a route that serves it.

    The pool is read once at start-up; the series is looked up again only when
    the app's pool object is another one.
    """

    __slots__ = ("pool", "series")

    def __init__(self) -> None:
        self.pool: object = None
        self.series: Buckets | None = None


class RequestLatency:
    """Every (route, algorithm) series of the sidecar."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], Buckets] = {}

    def buckets(self, route: str, algorithm: str) -> Buckets:
        found = self.series.get((route, algorithm))
        if found is None:
            found = self.series[(route, algorithm)] = Buckets()
        return found

    def timed(self, route: str, handler: AnyHandler) -> AnyHandler:
        """`handler` timed into its route's series, or `handler` itself if not an ID route.

        Both are plain functions returning the answer or an awaitable of it
        (see `nebula_id.http.errors.AnyHandler`).
        """
        if route not in TIMED_ROUTES:
            return handler
        fixed = TIMED_ROUTES[route]
        series = self.buckets(route, fixed) if fixed is not None else None
        bounds = BUCKETS
        clock = time.perf_counter
        where = bisect.bisect_left
        first_bound = BUCKETS[0]
        response_type = web.Response
        default = _DefaultSeries()

        def observe(request: web.Request, began: float) -> None:
            seconds = clock() - began
            target = series or self.buckets(route, request.app[keys.POOL].algorithm)
            target.counts[where(bounds, seconds)] += 1
            target.total += seconds

        async def awaited(
            request: web.Request, answer: Awaitable[web.StreamResponse], began: float
        ) -> web.StreamResponse:
            try:
                return await answer
            finally:
                observe(request, began)

        def timed_handler(
            request: web.Request,
        ) -> web.StreamResponse | Awaitable[web.StreamResponse]:
            began = clock()
            try:
                answer = handler(request)
            except BaseException:
                observe(request, began)
                raise
            # `type() is` first: StreamResponse is an ABC, its isinstance is slow.
            if type(answer) is response_type or isinstance(answer, web.StreamResponse):
                # `observe`, inline: this is every synchronous answer's path.
                seconds = clock() - began
                target = series
                if target is None:
                    pool = request.app[keys.POOL]
                    if pool is not default.pool:
                        default.pool = pool
                        default.series = self.buckets(route, pool.algorithm)
                    target = default.series
                    assert target is not None
                target.counts[0 if seconds < first_bound else where(bounds, seconds)] += 1
                target.total += seconds
                return answer
            return awaited(request, answer, began)

        timed_handler.__name__ = getattr(handler, "__name__", "handler")
        return timed_handler


class LatencyCollector(Collector):
    """Reads the buckets when scraped."""

    def __init__(self, latency: RequestLatency) -> None:
        self._latency = latency

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            METRIC,
            "Time to answer an ID request, by route and algorithm",
            labels=["route", "algorithm"],
        )
        for (route, algorithm), series in sorted(self._latency.series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), series.counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([route, algorithm], buckets, series.total)
        yield family
