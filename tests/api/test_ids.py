"""Every ID endpoint through the real app: shapes, counts, text form, parse, info, probes."""

from __future__ import annotations

import itertools
import re
import uuid

from nebula_id.core import layout as layouts
from tests.api.conftest import MakeClient

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def test_default_is_snowflake_as_decimal_string(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/v1/ids")
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"id"}
    assert isinstance(body["id"], str)
    assert body["id"].isdigit()
    parsed = layouts.SnowflakeLayout().parse(int(body["id"]))
    assert (parsed.datacenter, parsed.worker) == (0, 0)


async def test_batch_of_1000_is_distinct_and_strictly_increasing(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/v1/ids", params={"count": "1000"})
    assert response.status == 200
    ids = [int(v) for v in (await response.json())["ids"]]
    assert len(ids) == 1000
    assert all(a < b for a, b in itertools.pairwise(ids))
    more = [int(v) for v in (await (await client.get("/v1/ids/snowflake?count=5")).json())["ids"]]
    assert more[0] > ids[-1]


async def test_worker_and_datacenter_flags_are_in_the_id(make_client: MakeClient) -> None:
    client = await make_client(worker_id="7", datacenter_id="3")
    value = (await (await client.get("/v1/ids/snowflake")).json())["id"]
    response = await client.get(f"/v1/ids/snowflake/{value}/parse")
    assert response.status == 200
    parsed = await response.json()
    assert (parsed["id"], parsed["datacenter"], parsed["worker"]) == (value, 3, 7)
    assert parsed["layout"]["workerBits"] == 5
    assert parsed["timestamp"].endswith("Z")


async def test_uuid7_single_and_batch(make_client: MakeClient) -> None:
    client = await make_client()
    single = (await (await client.get("/v1/ids/uuid7")).json())["id"]
    assert UUID_RE.match(single)
    assert uuid.UUID(single).version == 7
    batch = (await (await client.get("/v1/ids/uuid7?count=500")).json())["ids"]
    assert len(batch) == 500
    assert all(UUID_RE.match(u) and uuid.UUID(u).version == 7 for u in batch)
    assert batch == sorted(batch)
    assert len(set(batch)) == 500
    assert single < batch[0]


async def test_uuid4_single_and_batch(make_client: MakeClient) -> None:
    client = await make_client()
    single = (await (await client.get("/v1/ids/uuid4")).json())["id"]
    assert UUID_RE.match(single)
    assert uuid.UUID(single).version == 4
    batch = (await (await client.get("/v1/ids/uuid4?count=100")).json())["ids"]
    assert len(set(batch)) == 100
    assert all(uuid.UUID(u).version == 4 and uuid.UUID(u).variant == uuid.RFC_4122 for u in batch)


async def test_segment_ids_increase_across_ranges(make_client: MakeClient) -> None:
    client = await make_client(tags="orders:5:5,users")
    seen: list[int] = []
    for _ in range(6):
        seen.append(int((await (await client.get("/v1/ids/segment/orders")).json())["id"]))
        batch = (await (await client.get("/v1/ids/segment/orders?count=7")).json())["ids"]
        seen.extend(int(v) for v in batch)
    assert len(seen) == 48
    assert all(a < b for a, b in itertools.pairwise(seen))
    assert seen[0] == 1
    other = (await (await client.get("/v1/ids/segment/users")).json())["id"]
    assert other == "1"  # each tag counts on its own
    first_tag = (await (await client.get("/v1/ids/segment")).json())["id"]
    assert int(first_tag) > seen[-1]


async def test_default_algorithm_setting(make_client: MakeClient) -> None:
    client = await make_client(algorithm="segment", tags="a:10")
    assert [(await (await client.get("/v1/ids")).json())["id"] for _ in range(3)] == ["1", "2", "3"]


async def test_default_uuid7_algorithm(make_client: MakeClient) -> None:
    client = await make_client(algorithm="uuid7")
    body = await (await client.get("/v1/ids?count=2")).json()
    assert all(uuid.UUID(u).version == 7 for u in body["ids"])


async def test_text_plain_is_one_id_per_line(make_client: MakeClient) -> None:
    client = await make_client()
    headers = {"Accept": "text/plain"}
    response = await client.get("/v1/ids?count=3", headers=headers)
    assert response.content_type == "text/plain"
    lines = (await response.text()).splitlines()
    assert len(lines) == 3
    assert all(line.isdigit() for line in lines)
    single = await client.get("/v1/ids/uuid4", headers=headers)
    assert UUID_RE.match((await single.text()).strip())


async def test_info_reports_pool_layout_node_and_sources(make_client: MakeClient) -> None:
    client = await make_client(worker_id="4", tags="orders:10")
    await client.get("/v1/ids/segment/orders")
    info = await (await client.get("/v1/info")).json()
    assert info["mode"] == "standalone"
    assert info["pool"] == "default/standalone"
    assert info["algorithm"] == "snowflake"
    assert info["layout"]["sequenceBits"] == 12
    assert info["maxBatchSize"] == 1000
    assert info["snowflake"]["worker"] == 4
    assert info["snowflake"]["ready"] is None
    assert info["snowflake"]["high_water_mark_ms"] is not None
    assert info["segment"]["tags"] == ["orders"]
    assert info["segment"]["ready"] is None
    state = info["segment"]["source"]["tags"]["orders"]
    assert state["range"] == [1, 11]
    assert state["cursor"] == 2


async def test_probes(make_client: MakeClient) -> None:
    client = await make_client()
    health = await client.get("/healthz")
    assert health.status == 200
    assert (await health.json())["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ready"


async def test_metrics_count_ids_and_errors(make_client: MakeClient) -> None:
    client = await make_client()
    await client.get("/v1/ids?count=10")
    await client.get("/v1/ids/uuid7")
    await client.get("/v1/ids?count=0")
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'nebula_id_ids_issued_total{algorithm="snowflake"} 10.0' in text
    assert 'nebula_id_ids_issued_total{algorithm="uuid7"} 1.0' in text
    assert 'code="invalid_argument"' in text
    assert 'nebula_id_source_ready{source="snowflake"} 1.0' in text
    assert "nebula_id_snowflake_high_water_mark_seconds" in text
