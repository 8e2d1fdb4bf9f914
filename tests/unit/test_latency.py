"""The request latency histogram: every answer lands in one bucket of the right series."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from tests.support.pools import make_pool

from nebula_id.http import keys, latency


def request_for(pool: Any) -> Any:
    return SimpleNamespace(app={keys.POOL: pool})


def ok(request: Any) -> web.Response:
    return web.Response(text="1")


def slow(request: Any) -> web.Response:
    time.sleep(0.0003)  # over the first two bounds (100 and 250 us)
    return web.Response(text="1")


def test_a_fixed_route_counts_each_answer_in_its_bucket() -> None:
    timing = latency.RequestLatency()
    fast_handler = timing.timed("/v1/ids/snowflake", ok)
    slow_handler = timing.timed("/v1/ids/snowflake", slow)
    request = request_for(make_pool())
    for _ in range(5):
        fast_handler(request)
    slow_handler(request)
    series = timing.series[("/v1/ids/snowflake", "snowflake")]
    assert sum(series.counts) == 6
    assert series.counts[0] == 5
    assert sum(series.counts[2:]) == 1
    assert series.total >= 0.0003


def test_the_default_route_follows_the_pools_algorithm() -> None:
    timing = latency.RequestLatency()
    handler = timing.timed("/v1/ids", ok)
    handler(request_for(make_pool(algorithm="segment")))
    handler(request_for(make_pool(algorithm="segment")))
    handler(request_for(make_pool(algorithm="uuid7")))
    assert sum(timing.series[("/v1/ids", "segment")].counts) == 2
    assert sum(timing.series[("/v1/ids", "uuid7")].counts) == 1


def test_awaited_answers_and_errors_are_counted_too() -> None:
    timing = latency.RequestLatency()

    async def answer() -> web.StreamResponse:
        return web.Response(text="1")

    def failing(request: Any) -> web.Response:
        raise ValueError("boom")

    request = request_for(make_pool())
    awaited = timing.timed("/v1/ids/uuid4", lambda request: answer())
    result = awaited(request)
    assert not isinstance(result, web.StreamResponse)
    assert isinstance(asyncio.run(result), web.Response)  # type: ignore[arg-type]
    raising = timing.timed("/v1/ids/uuid4", failing)
    with pytest.raises(ValueError, match="boom"):
        raising(request)
    assert sum(timing.series[("/v1/ids/uuid4", "uuid4")].counts) == 2


def test_routes_that_are_not_id_routes_are_not_wrapped() -> None:
    timing = latency.RequestLatency()
    assert timing.timed("/metrics", ok) is ok
