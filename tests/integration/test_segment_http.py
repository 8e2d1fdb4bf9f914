"""Segment IDs through the real sidecar app, backed by a real PostgreSQL (or MariaDB)."""

from __future__ import annotations

import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from nebula_id.clock import SystemClock
from nebula_id.config import serve as settings_mod
from nebula_id.http.app import build_app
from tests.support.fixtures import EngineFactory, PostgresFactory
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


async def make_client(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: pathlib.Path, dsn: str
) -> Client:
    settings = settings_mod.load(
        {
            "data_dir": str(tmp_path / "data"),
            "algorithm": "segment",
            "tags": "orders:100:100,users:10:10",
            "database_url": dsn,
        },
        {},
    )
    app = build_app(settings, clock=SystemClock(), registry=CollectorRegistry())
    return await aiohttp_client(app)


async def ids_of(client: Client, path: str) -> list[int]:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    body = await response.json()
    return [int(v) for v in body["ids"]] if "ids" in body else [int(body["id"])]


async def test_serves_spans_switches_and_reports(
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: pathlib.Path,
    segment_db_factory: EngineFactory,
) -> None:
    # Once per engine: NEBULA_DATABASE_URL's scheme picks PostgreSQL or MySQL/MariaDB.
    cluster = segment_db_factory()
    client = await make_client(aiohttp_client, tmp_path, cluster.dsn())
    first = await ids_of(client, "/v1/ids/segment/orders")
    # A batch of 250 spans at least two range switches (step 100).
    batch = await ids_of(client, "/v1/ids/segment/orders?count=250")
    default = await ids_of(client, "/v1/ids")
    served = first + batch + default
    assert served == sorted(served)
    assert len(set(served)) == len(served) == 252
    assert first == [1]

    unknown = await client.get("/v1/ids/segment/nope")
    assert unknown.status == 404
    error = (await unknown.json())["error"]
    assert error["code"] == "not_found"
    assert "orders" in error["message"]
    assert "users" in error["message"]

    await eventually_async(lambda: next_ready(client, "orders"), 10, what="the next range")
    info = (await (await client.get("/v1/info")).json())["segment"]["source"]
    orders = info["tags"]["orders"]
    assert orders["datacenter"] == "default"
    assert orders["step"] == 100
    assert orders["remaining"] + served[-1] + 1 == orders["range"][1]
    assert orders["next_ready"] is True
    assert info["failover"]["current"] == "default"

    metrics = await (await client.get("/metrics")).text()
    assert 'nebula_id_segment_remaining{tag="orders"}' in metrics
    assert 'nebula_id_segment_allocations_total{datacenter="default"}' in metrics


async def next_ready(client: Client, tag: str) -> bool:
    """Whether the tag's next range is loaded (the double buffer is full)."""
    info = (await (await client.get("/v1/info")).json())["segment"]["source"]
    return bool(info["tags"][tag]["next_ready"])


async def test_an_outage_serves_the_buffers_then_503_then_resumes(
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: pathlib.Path,
    postgres_factory: PostgresFactory,
) -> None:
    cluster = postgres_factory()
    client = await make_client(aiohttp_client, tmp_path, cluster.dsn())
    served = await ids_of(client, "/v1/ids/segment/orders?count=30")
    await eventually_async(lambda: next_ready(client, "orders"), 10, what="the next range")
    cluster.stop()

    status = 200
    for _ in range(500):
        response = await client.get("/v1/ids/segment/orders")
        status = response.status
        if status != 200:
            break
        served.append(int((await response.json())["id"]))
    assert status == 503
    body = await response.json()
    assert body["error"] == {
        "code": "unavailable",
        "reason": "segments_exhausted",
        "message": body["error"]["message"],
    }
    assert int(response.headers["Retry-After"]) >= 1
    # Every buffered ID was served before the 503: the current range and the next.
    assert len(served) == 200
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert "segments_exhausted" in (await ready.json())["reasons"]

    cluster.start()

    async def five() -> list[int] | None:
        response = await client.get("/v1/ids/segment/orders?count=5")
        if response.status != 200:
            return None
        return [int(v) for v in (await response.json())["ids"]]

    served += await eventually_async(five, 10, what="IDs after PostgreSQL is back", interval=0.1)
    assert len(set(served)) == len(served) == 205
    assert served == sorted(served)
