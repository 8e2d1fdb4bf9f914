"""The segment tag route matches exactly what aiohttp's ``{tag}`` pattern matches."""

from __future__ import annotations

import pytest
from aiohttp import web_urldispatcher

from nebula_id.http import routes

PATHS = [
    "/v1/ids/segment/bench",
    "/v1/ids/segment/a-b_c.d~e",
    "/v1/ids/segment/",
    "/v1/ids/segment",
    "/v1/ids/segment/a/b",
    "/v1/ids/segment/a{b",
    "/v1/ids/segment/a}b",
    "/v1/ids/segment/a%2Fb",
    "/v1/ids/segment/caf%C3%A9",
    "/v1/ids/segment/%7Bx%7D",
    "/v1/ids/segmentx/bench",
    "/v1/ids/snowflake",
]


@pytest.mark.parametrize("path", PATHS)
def test_tag_resource_matches_like_the_pattern(path: str) -> None:
    fast = routes._TagResource(routes.SEGMENT_TAG_PATH)
    pattern = web_urldispatcher.DynamicResource(routes.SEGMENT_TAG_PATH)
    assert fast._match(path) == pattern._match(path)


def test_a_plain_tag_is_taken_from_the_path() -> None:
    fast = routes._TagResource(routes.SEGMENT_TAG_PATH)
    assert fast._match("/v1/ids/segment/orders") == {"tag": "orders"}
