"""Every error code and 503 reason, with the JSON error shape and Retry-After."""

from __future__ import annotations

import json
import pathlib
import sqlite3
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from nebula_id import errors
from nebula_id.clock import FakeClock
from nebula_id.core import layout as layouts
from nebula_id.http import errors as http_errors
from nebula_id.http import keys
from nebula_id.http import stats as stats_mod
from nebula_id.standalone import mark as marks
from tests.api.conftest import MakeClient


async def error_of(response: Any, status: int, code: str, reason: str | None = None) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body["error"]) == {"code", "reason", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["reason"] == (reason or code)
    message: str = body["error"]["message"]
    assert message
    return message


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("abc", "got 'abc'"),
        ("0", "got 0"),
        ("-1", "got '-1'"),
        ("1001", "maxBatchSize is 1000"),
        ("%C2%B2", "got '²'"),
        ("", "got ''"),
        ("1" * 5000, "got '11111111111111111111...'"),
    ],
)
async def test_bad_count_is_400_naming_the_problem(
    make_client: MakeClient, query: str, named: str
) -> None:
    client = await make_client()
    for path in ("/v1/ids", "/v1/ids/uuid7", "/v1/ids/segment/default"):
        message = await error_of(await client.get(f"{path}?count={query}"), 400, "invalid_argument")
        assert named in message


async def test_configured_max_batch_size_is_the_limit(make_client: MakeClient) -> None:
    client = await make_client(max_batch_size="10")
    assert (await client.get("/v1/ids?count=10")).status == 200
    message = await error_of(await client.get("/v1/ids?count=11"), 400, "invalid_argument")
    assert "maxBatchSize is 10" in message


@pytest.mark.parametrize("bad", ["abc", "-5", "99999999999999999999", "1.5", "%C2%B2"])
async def test_malformed_id_to_parse_is_400(make_client: MakeClient, bad: str) -> None:
    client = await make_client()
    message = await error_of(
        await client.get(f"/v1/ids/snowflake/{bad}/parse"), 400, "invalid_argument"
    )
    assert "Snowflake ID" in message


async def test_unknown_algorithm_is_404_listing_the_algorithms(make_client: MakeClient) -> None:
    client = await make_client()
    message = await error_of(await client.get("/v1/ids/ulid"), 404, "not_found")
    assert "'ulid'" in message
    assert "snowflake" in message
    assert "uuid7" in message


async def test_unknown_tag_is_404_listing_known_tags(make_client: MakeClient) -> None:
    client = await make_client(tags="orders,users")
    message = await error_of(await client.get("/v1/ids/segment/nope"), 404, "not_found")
    assert "known tags: orders, users" in message


async def test_unknown_route_and_method(make_client: MakeClient) -> None:
    client = await make_client()
    await error_of(await client.get("/v2/ids"), 404, "not_found")
    await error_of(await client.post("/v1/ids"), 405, "method_not_allowed")


# --- 401 ------------------------------------------------------------------------------


async def test_api_keys(make_client: MakeClient, tmp_path: pathlib.Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# rotated daily\nfile-key\n")
    client = await make_client(auth_api_keys="k1,k2", auth_api_keys_file=str(keys_file))
    assert "X-API-Key" in await error_of(await client.get("/v1/ids"), 401, "unauthorized")
    await error_of(await client.get("/v1/ids", headers={"X-API-Key": "k3"}), 401, "unauthorized")
    bad_bearer = {"Authorization": "Bearer nope"}
    await error_of(await client.get("/v1/ids", headers=bad_bearer), 401, "unauthorized")
    assert (await client.get("/v1/ids", headers={"X-API-Key": "k2"})).status == 200
    assert (await client.get("/v1/info", headers={"Authorization": "Bearer k1"})).status == 200
    assert (await client.get("/v1/ids", headers={"X-API-Key": "file-key"})).status == 200
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(open_path)).status == 200


async def test_empty_keys_file_fails_at_start(
    make_client: MakeClient, tmp_path: pathlib.Path
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("\n")
    with pytest.raises(errors.ConfigError, match="holds no keys"):
        await make_client(auth_api_keys_file=str(keys_file))


# --- 429 ------------------------------------------------------------------------------


async def test_rate_limit_is_429_with_retry_after(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(clock=clock, rate_limit_rps="1", rate_limit_burst="2")
    assert (await client.get("/v1/ids/uuid4")).status == 200
    assert (await client.get("/v1/ids/uuid4")).status == 200
    refused = await client.get("/v1/ids/uuid4")
    await error_of(refused, 429, "rate_limited")
    assert refused.headers["Retry-After"] == "1"
    assert (await client.get("/healthz")).status == 200  # probes are never limited
    clock.advance(1.0)
    assert (await client.get("/v1/ids/uuid4")).status == 200


# --- 503 ------------------------------------------------------------------------------


async def test_clock_moved_backward_is_503_and_issues_nothing(make_client: MakeClient) -> None:
    clock = FakeClock(wall_ms=1_800_000_000_000)
    client = await make_client(clock=clock)
    last = int((await (await client.get("/v1/ids")).json())["id"])
    clock.set_wall_ms(clock.wall_ms() - 50)
    refused = await client.get("/v1/ids?count=5")
    message = await error_of(refused, 503, "unavailable", "clock_moved_backward")
    assert "50 ms" in message
    assert int(refused.headers["Retry-After"]) >= 1
    ready = await client.get("/readyz")
    await error_of(ready, 503, "unavailable", "clock_moved_backward")
    assert (await ready.json())["reasons"] == ["clock_moved_backward"]
    assert set(await ready.json()) == {"error", "reasons"}
    assert ready.headers["Retry-After"] == "1"
    assert ready.headers["Content-Type"].startswith("application/json")
    # UUIDs need no clock proof and keep serving.
    assert (await client.get("/v1/ids/uuid7")).status == 200
    clock.advance(0.051)
    resumed = int((await (await client.get("/v1/ids")).json())["id"])
    assert resumed > last


async def test_small_rollback_within_tolerance_waits(make_client: MakeClient) -> None:
    clock = FakeClock(wall_ms=1_800_000_000_000)
    client = await make_client(clock=clock)
    last = int((await (await client.get("/v1/ids")).json())["id"])
    clock.set_wall_ms(clock.wall_ms() - 3)
    response = await client.get("/v1/ids")
    assert response.status == 200
    assert int((await response.json())["id"]) > last
    assert clock.slept  # it waited rather than refused


async def test_previous_mark_in_the_future_is_503_not_ready_until_passed(
    make_client: MakeClient, tmp_path: pathlib.Path
) -> None:
    """A restart after the clock went back: the stored mark is ahead of the clock."""
    clock = FakeClock(wall_ms=1_800_000_000_000)
    data = tmp_path / "data"
    data.mkdir()
    stored = clock.wall_ms() + 10_000
    marks.MarkFile(data).write(stored)
    client = await make_client(clock=clock, data_dir=str(data))
    refused = await client.get("/v1/ids")
    message = await error_of(refused, 503, "unavailable", "not_ready")
    assert "high-water mark" in message
    assert int(refused.headers["Retry-After"]) >= 10
    await error_of(await client.get("/readyz"), 503, "unavailable", "not_ready")
    clock.advance(10.001)
    value = int((await (await client.get("/v1/ids")).json())["id"])
    assert layouts.SnowflakeLayout().parse(value).timestamp_ms > stored
    assert (await client.get("/readyz")).status == 200
    # The new mark was persisted ahead of the clock before that ID was issued.
    assert (marks.MarkFile(data).read() or 0) >= clock.wall_ms()


async def test_segments_exhausted_is_503(make_client: MakeClient, tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    limit = 1 << (63 - 5)
    db = sqlite3.connect(data / "segments.sqlite3")
    db.execute(
        "CREATE TABLE nebula_segments (tag TEXT NOT NULL, datacenter_id INTEGER NOT NULL, "
        "max_id INTEGER NOT NULL, step INTEGER NOT NULL, updated_at TEXT NOT NULL DEFAULT "
        "CURRENT_TIMESTAMP, PRIMARY KEY (tag, datacenter_id))"
    )
    db.execute("INSERT INTO nebula_segments VALUES ('full', 0, ?, 10, '')", (limit - 5,))
    db.commit()
    db.close()
    client = await make_client(data_dir=str(data), tags="full:10,fine:10", algorithm="segment")
    refused = await client.get("/v1/ids/segment/full")
    await error_of(refused, 503, "unavailable", "segments_exhausted")
    assert "Retry-After" in refused.headers
    assert (await client.get("/v1/ids/segment/fine")).status == 200
    await error_of(await client.get("/readyz"), 503, "unavailable", "segments_exhausted")


async def test_second_app_on_the_same_data_dir_refuses(make_client: MakeClient) -> None:
    await make_client()
    with pytest.raises(errors.DataDirLocked, match="in use by another nebula-id process"):
        await make_client()


@pytest.mark.parametrize(
    ("error", "status", "code", "reason"),
    [
        (errors.LeaseLost("lease gone", retry_after=2.5), 503, "unavailable", "lease_lost"),
        (errors.WorkerIdsExhausted("all taken"), 503, "unavailable", "worker_ids_exhausted"),
        (errors.SegmentExhausted("dry"), 503, "unavailable", "segments_exhausted"),
        (
            errors.ClockMovedBackward("back", behind_ms=9),
            503,
            "unavailable",
            "clock_moved_backward",
        ),
        (errors.NotReady("wait"), 503, "unavailable", "not_ready"),
        (errors.StorageError("db down"), 503, "unavailable", "not_ready"),
        (errors.CoordinationError("etcd down"), 503, "unavailable", "not_ready"),
        (errors.RateLimited("slow down", retry_after=0.2), 429, "rate_limited", "rate_limited"),
        (errors.Unauthorized("who"), 401, "unauthorized", "unauthorized"),
        (errors.InvalidArgument("bad"), 400, "invalid_argument", "invalid_argument"),
    ],
)
async def test_error_middleware_maps_every_error(
    aiohttp_client: Any, error: errors.NebulaIdError, status: int, code: str, reason: str
) -> None:
    async def fail(request: web.Request) -> web.Response:
        raise error

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail")

    app = web.Application(middlewares=[http_errors.error_middleware])
    app.router.add_get("/fail", fail)
    app.router.add_get("/crash", crash)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    response = await client.get("/fail")
    assert await error_of(response, status, code, reason) == error.message
    if status in (429, 503):
        expected = "3" if isinstance(error, errors.LeaseLost) else "1"
        assert response.headers["Retry-After"] == expected
    else:
        assert "Retry-After" not in response.headers
    crashed = await client.get("/crash")
    assert crashed.status == 500
    assert "secret detail" not in json.dumps(await crashed.json())


async def test_guarded_handlers_map_errors_without_any_middleware(aiohttp_client: Any) -> None:
    async def unavailable(request: web.Request) -> web.Response:
        raise errors.LeaseLost("gone", retry_after=0.5)

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail")

    app = web.Application()
    app[keys.STATS] = stats_mod.RequestStats()
    app.router.add_get("/unavailable", http_errors.guarded(unavailable))
    app.router.add_get("/crash", http_errors.guarded(crash))
    client: TestClient[Any, Any] = await aiohttp_client(app)
    response = await client.get("/unavailable")
    await error_of(response, 503, "unavailable", "lease_lost")
    assert response.headers["Retry-After"] == "1"
    crashed = await client.get("/crash")
    assert crashed.status == 500
    assert "secret detail" not in await crashed.text()
    assert app[keys.STATS].errors[(503, "unavailable", "lease_lost")] == 1


async def test_404_and_405_keep_the_json_shape_behind_middlewares(make_client: MakeClient) -> None:
    client = await make_client(auth_api_keys="k", audit_log="-")
    headers = {"X-API-Key": "k"}
    await error_of(await client.get("/v2/ids", headers=headers), 404, "not_found")
    await error_of(await client.delete("/v1/ids", headers=headers), 405, "method_not_allowed")
