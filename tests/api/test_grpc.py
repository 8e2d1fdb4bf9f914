"""The gRPC API (ids.proto) of the real app: every method, with API keys, limits and errors.

The app is the one `build_app` makes, served by `aiohttp_client`; with
``grpc_port=0`` its gRPC server binds a free port in the same event loop, and
the tests talk to it through a real grpc.aio channel.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nebula_id.clock import FakeClock
from nebula_id.core import layout as layouts
from nebula_id.http import keys
from nebula_id.rpc import ids_pb2, ids_pb2_grpc, server
from tests.api.conftest import MakeClient

KEY = "grpc-test-key"


class Sidecar:
    """An app with HTTP (`http`) and gRPC (`ids`, `health`) clients."""

    def __init__(self, http: TestClient[Any, Any], channel: grpc.aio.Channel) -> None:
        self.http = http
        self.channel = channel
        self.ids = ids_pb2_grpc.IdsStub(channel)  # type: ignore[no-untyped-call]
        self.health = health_pb2_grpc.HealthStub(channel)


@pytest.fixture
async def start(make_client: MakeClient) -> AsyncIterator[Any]:
    channels: list[grpc.aio.Channel] = []

    async def make(**flags: Any) -> Sidecar:
        http = await make_client(grpc_port="0", **flags)
        port = http.server.app[keys.GRPC_PORT]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return Sidecar(http, channel)

    yield make
    for channel in channels:
        await channel.close()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: str(v) for k, v in (error.trailing_metadata() or ())}


async def test_next_serves_every_algorithm_and_the_pools_default(start: Any) -> None:
    sidecar = await start(tags="orders:100")
    first = await sidecar.ids.Next(ids_pb2.NextRequest())
    second = await sidecar.ids.Next(ids_pb2.NextRequest(algorithm="snowflake"))
    assert first.WhichOneof("value") == "id"
    assert 0 < first.id < second.id
    segment = await sidecar.ids.Next(ids_pb2.NextRequest(algorithm="segment", tag="orders"))
    default_tag = await sidecar.ids.Next(ids_pb2.NextRequest(algorithm="segment"))
    assert default_tag.id == segment.id + 1
    for name, version in (("uuid7", "7"), ("uuid4", "4")):
        reply = await sidecar.ids.Next(ids_pb2.NextRequest(algorithm=name))
        assert reply.WhichOneof("value") == "uuid"
        assert len(reply.uuid) == 36
        assert reply.uuid[14] == version


async def test_batch_returns_count_ids_in_order_and_uuids_as_strings(start: Any) -> None:
    sidecar = await start(max_batch_size="50")
    batch = await sidecar.ids.Batch(ids_pb2.BatchRequest(algorithm="snowflake", count=50))
    assert len(batch.ids) == 50
    assert all(a < b for a, b in itertools.pairwise(batch.ids))
    uuids = await sidecar.ids.Batch(ids_pb2.BatchRequest(algorithm="uuid7", count=3))
    assert len(uuids.uuids) == 3
    assert not uuids.ids
    for count in (0, 51):
        error = await refused(sidecar.ids.Batch(ids_pb2.BatchRequest(count=count)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == (
            f"invalid_argument: count must be from 1 to 50 (maxBatchSize is 50), got {count}"
        )
        assert trailers(error)["nebula-id-code"] == "invalid_argument"


async def test_stream_sends_total_ids_in_batches_without_repeats(start: Any) -> None:
    sidecar = await start(tags="bulk:500:5000")
    for algorithm, tag in (("snowflake", ""), ("segment", "bulk")):
        request = ids_pb2.StreamRequest(algorithm=algorithm, tag=tag, batch_size=1000, total=2500)
        sizes, seen = [], []
        async for batch in sidecar.ids.Stream(request):
            sizes.append(len(batch.ids))
            seen += batch.ids
        assert sizes == [1000, 1000, 500]
        assert all(a < b for a, b in itertools.pairwise(seen))
    error = await refused(sidecar.ids.Stream(ids_pb2.StreamRequest(total=0)).read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "total must be at least 1" in (error.details() or "")


async def test_unknown_algorithm_tag_and_misplaced_tag(start: Any) -> None:
    sidecar = await start(tags="orders")
    error = await refused(sidecar.ids.Next(ids_pb2.NextRequest(algorithm="uuid9")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert (error.details() or "").startswith("not_found: unknown algorithm 'uuid9'")
    error = await refused(
        sidecar.ids.Batch(ids_pb2.BatchRequest(algorithm="segment", tag="x", count=1))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "known tags: orders" in (error.details() or "")
    error = await refused(sidecar.ids.Next(ids_pb2.NextRequest(algorithm="uuid4", tag="orders")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_parse_decodes_an_id_and_rejects_a_negative_one(start: Any) -> None:
    sidecar = await start(worker_id="7", datacenter_id="3")
    issued = (await sidecar.ids.Next(ids_pb2.NextRequest())).id
    parsed = await sidecar.ids.Parse(ids_pb2.ParseRequest(id=issued))
    expected = layouts.SnowflakeLayout().parse(issued)
    assert (parsed.id, parsed.worker, parsed.datacenter) == (issued, 7, 3)
    assert parsed.timestamp_ms == expected.timestamp_ms
    assert parsed.sequence == expected.sequence
    assert parsed.timestamp == layouts.format_epoch(expected.timestamp_ms)
    error = await refused(sidecar.ids.Parse(ids_pb2.ParseRequest(id=-1)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_info_mirrors_the_http_info(start: Any) -> None:
    sidecar = await start(max_batch_size="77")
    info = await sidecar.ids.Info(ids_pb2.InfoRequest())
    http = await (await sidecar.http.get("/v1/info")).json()
    assert (info.pool, info.algorithm, info.mode) == (http["pool"], "snowflake", "standalone")
    assert info.max_batch_size == 77
    assert info.datacenter == http["datacenter"]
    assert info.details["layout"]["sequenceBits"] == http["layout"]["sequenceBits"]
    assert info.details["snowflake"]["ready"] is None


async def test_api_keys_guard_every_method_but_health(start: Any) -> None:
    sidecar = await start(auth_api_keys=KEY)
    calls = {
        "Next": lambda md: sidecar.ids.Next(ids_pb2.NextRequest(), metadata=md),
        "Batch": lambda md: sidecar.ids.Batch(ids_pb2.BatchRequest(count=2), metadata=md),
        "Stream": lambda md: sidecar.ids.Stream(ids_pb2.StreamRequest(total=2), metadata=md).read(),
        "Parse": lambda md: sidecar.ids.Parse(ids_pb2.ParseRequest(id=1), metadata=md),
        "Info": lambda md: sidecar.ids.Info(ids_pb2.InfoRequest(), metadata=md),
    }
    for name, call in calls.items():
        for metadata in ((), (("x-api-key", "wrong"),), (("authorization", "Bearer wrong"),)):
            error = await refused(call(metadata))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, name
            assert (error.details() or "").startswith("unauthorized: "), name
        await call((("x-api-key", KEY),))
        await call((("authorization", f"Bearer {KEY}"),))
    check = await sidecar.health.Check(health_pb2.HealthCheckRequest(service=""))
    assert check.status == health_pb2.HealthCheckResponse.SERVING


async def test_one_rate_limit_for_http_and_grpc_with_retry_after(start: Any) -> None:
    # One caller (the same peer host here) has one bucket, whichever protocol it uses.
    clock = FakeClock()
    sidecar = await start(clock=clock, rate_limit_rps="1", rate_limit_burst="2")
    assert (await sidecar.http.get("/v1/ids")).status == 200
    await sidecar.ids.Next(ids_pb2.NextRequest())
    error = await refused(sidecar.ids.Next(ids_pb2.NextRequest()))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (error.details() or "").startswith("rate_limited: more than 1 IDs per second")
    assert trailers(error)["retry-after"] == "1"
    assert (await sidecar.http.get("/v1/ids")).status == 429
    clock.advance(1.0)
    await sidecar.ids.Next(ids_pb2.NextRequest())


async def test_unavailable_names_its_reason_in_details_and_trailers(start: Any) -> None:
    clock = FakeClock(wall_ms=1_800_000_000_000)
    sidecar = await start(clock=clock)
    await sidecar.ids.Next(ids_pb2.NextRequest())
    clock.set_wall_ms(clock.wall_ms() - 50)
    error = await refused(sidecar.ids.Next(ids_pb2.NextRequest()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert (error.details() or "").startswith("clock_moved_backward: ")
    assert trailers(error)["nebula-id-reason"] == "clock_moved_backward"
    assert int(trailers(error)["retry-after"]) >= 1


async def test_grpc_requests_and_errors_reach_the_metrics(start: Any) -> None:
    sidecar = await start()
    await sidecar.ids.Next(ids_pb2.NextRequest())
    await sidecar.ids.Batch(ids_pb2.BatchRequest(count=10))
    await refused(sidecar.ids.Next(ids_pb2.NextRequest(algorithm="nope")))
    # The counters behind /metrics (read here, not by metric name, which may change).
    stats = sidecar.http.server.app[keys.STATS]
    assert stats.ids["snowflake"] == 11
    assert stats.requests["snowflake"] == 2
    assert stats.errors[(404, "not_found", "not_found")] == 1
    text = await (await sidecar.http.get("/metrics")).text()
    assert 'algorithm="snowflake"} 11.0' in text


async def test_health_follows_readiness_of_the_default_algorithm(start: Any) -> None:
    sidecar = await start()
    for service in ("", server.SERVICE_NAME):
        check = await sidecar.health.Check(health_pb2.HealthCheckRequest(service=service))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
    error = await refused(sidecar.health.Check(health_pb2.HealthCheckRequest(service="other")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
