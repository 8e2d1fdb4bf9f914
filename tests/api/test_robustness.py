"""Odd input never gets a 500 or a traceback: only the documented codes."""

from __future__ import annotations

import random
import urllib.parse

from tests.api.conftest import MakeClient

PIECES = [
    "",
    "0",
    "1",
    "-1",
    "1000",
    "1001",
    "9" * 30,
    "abc",
    "²",
    "١٢",
    " 5 ",
    "1e3",
    "0x10",
    "%",
    "../",
    "default",
    "orders",
    "ORDERS",
    "a" * 300,
    "\u00e9",
    "null",
]
PATHS = [
    "/v1/ids",
    "/v1/ids/{p}",
    "/v1/ids/segment/{p}",
    "/v1/ids/snowflake/{p}/parse",
    "/v1/ids/{p}/{p}",
    "/{p}",
]


async def test_random_paths_and_counts_only_get_documented_codes(make_client: MakeClient) -> None:
    client = await make_client(tags="orders:10")
    rng = random.Random(20240101)
    seen: set[int] = set()
    for _ in range(300):
        piece = urllib.parse.quote(rng.choice(PIECES), safe="")
        path = rng.choice(PATHS).format(p=piece)
        if rng.random() < 0.6:
            path += "?count=" + urllib.parse.quote(rng.choice(PIECES), safe="")
        headers = {"Accept": rng.choice(["*/*", "text/plain", "application/json", "x/y"])}
        response = await client.get(path, headers=headers)
        seen.add(response.status)
        assert response.status in (200, 400, 404), (path, response.status, await response.text())
        if response.status != 200:
            body = await response.json()
            assert set(body["error"]) == {"code", "reason", "message"}
    assert {200, 400, 404} <= seen
