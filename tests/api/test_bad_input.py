"""Bad input gets a clear JSON answer, HEAD spends no ID, and no version is advertised."""

from __future__ import annotations

from nebula_id.clock import FakeClock
from tests.api.conftest import MakeClient


async def test_parse_of_an_id_beyond_year_9999_is_a_400(make_client: MakeClient) -> None:
    # 50 timestamp bits reach far past what a date can hold.
    client = await make_client(
        snowflake_timestamp_bits="50",
        snowflake_datacenter_bits="1",
        snowflake_worker_bits="1",
        snowflake_sequence_bits="11",
    )
    response = await client.get(f"/v1/ids/snowflake/{(1 << 63) - 1}/parse")
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == "invalid_argument"
    assert "9999" in body["error"]["message"]
    fine = await client.get("/v1/ids/snowflake/12345/parse")
    assert fine.status == 200


async def test_head_does_not_consume_an_id(make_client: MakeClient) -> None:
    client = await make_client(clock=FakeClock(wall_ms=1_800_000_000_000))
    first = int((await (await client.get("/v1/ids/snowflake")).json())["id"])
    for path in ("/v1/ids", "/v1/ids/snowflake", "/v1/ids/snowflake?count=100", "/v1/ids/uuid7"):
        head = await client.head(path)
        assert head.status == 405, path
        assert head.headers["Allow"] == "GET"
    second = int((await (await client.get("/v1/ids/snowflake")).json())["id"])
    # Same millisecond (frozen clock): the sequence moved by exactly one.
    assert second == first + 1
    assert (await client.head("/healthz")).status == 200


async def test_no_versions_in_the_server_header(make_client: MakeClient) -> None:
    client = await make_client(auth_api_keys="k")
    for path, headers in (
        ("/v1/ids", {"X-API-Key": "k"}),
        ("/v1/ids", {}),
        ("/nope", {}),
        ("/metrics", {}),
        ("/healthz", {}),
        ("/v1/info", {"X-API-Key": "k"}),
    ):
        response = await client.get(path, headers=headers)
        assert response.headers["Server"] == "nebula-id", (path, response.headers["Server"])
