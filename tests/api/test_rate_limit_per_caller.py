"""The rate limit: one bucket per API key (per peer without auth), one token per ID.

Batches are charged by their `count`, so a key cannot take more IDs per second
than the rate by asking in batches; another key keeps its own bucket; every
answer past the key check carries ``X-RateLimit-*`` and a 429 ``Retry-After``.
The probes and /metrics are not limited.
"""

from __future__ import annotations

from typing import Any

from nebula_id.clock import FakeClock
from tests.api.conftest import MakeClient

KEYS = "key-alpha-0123456789,key-beta-0123456789"


def limits(response: Any) -> tuple[int, int, int]:
    headers = response.headers
    return (
        int(headers["X-RateLimit-Limit"]),
        int(headers["X-RateLimit-Remaining"]),
        int(headers["X-RateLimit-Reset"]),
    )


async def test_batches_are_charged_by_count_and_keys_do_not_share_a_bucket(
    make_client: MakeClient,
) -> None:
    clock = FakeClock()  # frozen: nothing refills unless the test says so
    client = await make_client(
        clock=clock, auth_api_keys=KEYS, rate_limit_rps="5", rate_limit_burst="50"
    )
    alpha = {"X-API-Key": "key-alpha-0123456789"}
    beta = {"X-API-Key": "key-beta-0123456789"}

    got: list[str] = []
    for _ in range(5):
        response = await client.get("/v1/ids/snowflake?count=10", headers=alpha)
        assert response.status == 200
        got += (await response.json())["ids"]
    assert len(set(got)) == 50
    assert limits(response) == (50, 0, 10)  # 50 tokens to refill at 5/s

    # The sixth batch (and even a single ID) is refused: 50 IDs is the burst.
    refused = await client.get("/v1/ids/snowflake?count=10", headers=alpha)
    assert refused.status == 429
    body = await refused.json()
    assert body["error"]["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "2"  # 10 tokens at 5 per second
    assert limits(refused) == (50, 0, 10)
    assert (await client.get("/v1/ids", headers=alpha)).status == 429

    # Another key has its own full bucket.
    other = await client.get("/v1/ids/snowflake?count=50", headers=beta)
    assert other.status == 200
    assert len((await other.json())["ids"]) == 50
    assert limits(other) == (50, 0, 10)

    # More than the burst at once can never pass: a 400 that says so, not a 429 forever.
    too_big = await client.get("/v1/ids/snowflake?count=51", headers=alpha)
    assert too_big.status == 400
    assert "at most 50" in (await too_big.json())["error"]["message"]

    # Time refills by the rate: one second is five IDs.
    clock.advance(1.0)
    response = await client.get("/v1/ids/snowflake?count=5", headers=alpha)
    assert response.status == 200
    assert limits(response) == (50, 0, 10)
    assert (await client.get("/v1/ids", headers=alpha)).status == 429

    # Errors past the limit carry the headers too; probes and metrics are not limited.
    clock.advance(1.0)
    missing = await client.get("/v1/ids/segment/none", headers=beta)
    assert missing.status == 404
    assert limits(missing) == (50, 9, 9)  # two seconds refilled 10; this took 1
    for path in ("/healthz", "/readyz", "/metrics"):
        for _ in range(3):
            assert (await client.get(path)).status == 200


async def test_without_auth_each_peer_has_a_bucket_and_every_answer_has_the_headers(
    make_client: MakeClient,
) -> None:
    clock = FakeClock()
    client = await make_client(clock=clock, rate_limit_rps="100", rate_limit_burst="100")
    first = await client.get("/v1/ids/uuid7?count=60")
    assert first.status == 200
    assert limits(first) == (100, 40, 1)
    second = await client.get("/v1/ids/uuid4?count=40")
    assert limits(second) == (100, 0, 1)
    refused = await client.get("/v1/info")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert limits(refused) == (100, 0, 1)
