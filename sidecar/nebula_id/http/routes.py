"""The HTTP API of DESIGN.md: IDs, parse, info and the probes.

Handlers only translate: query and path in, a source call, bytes out.  The
single-ID path is the hot one (the target is >= 15 k req/s on one core), so it
formats JSON by hand and reads the query string only when there is one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from nebula_id import __version__, errors
from nebula_id.core import layout as layouts
from nebula_id.core import uuids
from nebula_id.http import errors as http_errors
from nebula_id.http import keys

ALGORITHM_NAMES = ("snowflake", "segment", "uuid7", "uuid4")
JSON = "application/json"
TEXT = "text/plain"
# Passing the header beats `content_type=`, which re-parses it on every response.
_JSON_HEADERS = {"Content-Type": JSON}
_TEXT_HEADERS = {"Content-Type": TEXT + "; charset=utf-8"}


def _count(request: web.Request) -> int | None:
    """The `count` query parameter: None when absent, else 1..maxBatchSize."""
    if not request.query_string:
        return None
    raw = request.query.get("count")
    if raw is None:
        return None
    limit = request.app[keys.POOL].sidecar.max_batch_size
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        shown = raw if len(raw) <= 20 else raw[:20] + "..."
        raise errors.InvalidArgument(f"count must be an integer from 1 to {limit}, got {shown!r}")
    count = int(text)
    if not 1 <= count <= limit:
        raise errors.InvalidArgument(
            f"count must be from 1 to {limit} (maxBatchSize is {limit}), got {count}"
        )
    return count


def _wants_text(request: web.Request) -> bool:
    accept = request.headers.get("Accept")
    return accept is not None and TEXT in accept and JSON not in accept


def _one(request: web.Request, value: str) -> web.Response:
    if _wants_text(request):
        return web.Response(body=value.encode() + b"\n", headers=_TEXT_HEADERS)
    return web.Response(body=b'{"id":"%s"}' % value.encode(), headers=_JSON_HEADERS)


def _many(request: web.Request, values: Iterable[str]) -> web.Response:
    if _wants_text(request):
        return web.Response(body=("\n".join(values) + "\n").encode(), headers=_TEXT_HEADERS)
    body = ('{"ids":["' + '","'.join(values) + '"]}').encode()
    return web.Response(body=body, headers=_JSON_HEADERS)


def _json(payload: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(payload, default=str).encode(), content_type=JSON
    )


# --- IDs -------------------------------------------------------------------------------


async def snowflake(request: web.Request) -> web.Response:
    return _snowflake_answer(request)


def _snowflake_answer(request: web.Request) -> web.Response:
    """Synchronous, so `/v1/ids` can call it without another coroutine."""
    app = request.app
    count = _count(request) if request.query_string else None
    if count is None:
        value = app[keys.SNOWFLAKE].next_id()
        app[keys.STATS].singles["snowflake"] += 1
        if _wants_text(request):
            return web.Response(body=b"%d\n" % value, headers=_TEXT_HEADERS)
        return web.Response(body=b'{"id":"%d"}' % value, headers=_JSON_HEADERS)
    source = app[keys.SNOWFLAKE]
    stats = app[keys.STATS]
    ids = source.next_ids(count)
    stats.served("snowflake", count)
    return _many(request, map(str, ids))


def _uuid_handler(
    name: str, one: Callable[[], str], batch: Callable[[int], list[str]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        stats = request.app[keys.STATS]
        count = _count(request) if request.query_string else None
        if count is None:
            stats.singles[name] += 1
            return _one(request, one())
        stats.served(name, count)
        return _many(request, batch(count))

    handler.__name__ = name
    return handler


uuid7 = _uuid_handler("uuid7", uuids.uuid7, uuids.uuid7_batch)
uuid4 = _uuid_handler("uuid4", uuids.uuid4, uuids.uuid4_batch)


async def _segment_ids(request: web.Request, tag: str) -> web.Response:
    source = request.app[keys.SEGMENTS]
    count = _count(request)
    ids = await source.next_ids(tag, count or 1)
    stats = request.app[keys.STATS]
    if count is None:
        stats.singles["segment"] += 1
        return _one(request, str(ids[0]))
    stats.served("segment", count)
    return _many(request, map(str, ids))


async def segment(request: web.Request) -> web.Response:
    return await _segment_ids(request, request.match_info["tag"])


def _default_tag(request: web.Request) -> str:
    tags = request.app[keys.SEGMENTS].tags()
    if not tags:
        raise errors.NotFound("no segment tags are configured")
    return tags[0]


async def segment_default(request: web.Request) -> web.Response:
    """`/v1/ids/segment` without a tag: the pool's first tag."""
    return await _segment_ids(request, _default_tag(request))


async def default(request: web.Request) -> web.Response:
    """`/v1/ids`: the pool's default algorithm."""
    algorithm = request.app[keys.POOL].algorithm
    if algorithm == "snowflake":
        return _snowflake_answer(request)
    if algorithm == "uuid7":
        return await uuid7(request)
    if algorithm == "uuid4":
        return await uuid4(request)
    return await segment_default(request)


async def unknown_algorithm(request: web.Request) -> web.Response:
    name = request.match_info["algorithm"]
    raise errors.UnknownAlgorithm(
        f"unknown algorithm {name!r}; use one of: {', '.join(ALGORITHM_NAMES)}"
    )


# --- parse, info, probes -------------------------------------------------------------


def parsed_json(layout: layouts.SnowflakeLayout, parsed: layouts.ParsedId) -> dict[str, Any]:
    return {
        "id": str(parsed.id),
        "timestamp_ms": parsed.timestamp_ms,
        "timestamp": layouts.format_epoch(parsed.timestamp_ms),
        "datacenter": parsed.datacenter,
        "worker": parsed.worker,
        "sequence": parsed.sequence,
        "layout": layout.to_json(),
    }


async def parse(request: web.Request) -> web.Response:
    layout = request.app[keys.POOL].layout
    parsed = layout.parse_text(request.match_info["id"])
    return _json(parsed_json(layout, parsed))


async def info(request: web.Request) -> web.Response:
    app = request.app
    pool = app[keys.POOL]
    settings = app[keys.SETTINGS]
    snowflake_source = app[keys.SNOWFLAKE]
    segments = app[keys.SEGMENTS]
    return _json(
        {
            "version": __version__,
            "mode": "cluster" if settings.cluster_mode else "standalone",
            "pool": pool.ref,
            "algorithm": pool.algorithm,
            "layout": pool.layout.to_json(),
            "maxBatchSize": pool.sidecar.max_batch_size,
            "datacenter": pool.datacenter(settings.datacenter).name,
            "snowflake": {"ready": snowflake_source.ready_reason(), **snowflake_source.info()},
            "segment": {
                "tags": segments.tags(),
                "ready": segments.ready_reason(),
                "source": segments.info(),
            },
        }
    )


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


def not_ready_reasons(app: web.Application) -> list[str]:
    """Why the default algorithm cannot serve now (empty when it can)."""
    algorithm = app[keys.POOL].algorithm
    if algorithm == "snowflake":
        reason = app[keys.SNOWFLAKE].ready_reason()
    elif algorithm == "segment":
        reason = app[keys.SEGMENTS].ready_reason()
    else:
        reason = None  # UUIDs need nothing but the process
    return [] if reason is None else [reason]


async def readyz(request: web.Request) -> web.Response:
    reasons = not_ready_reasons(request.app)
    if not reasons:
        return _json({"status": "ready", "algorithm": request.app[keys.POOL].algorithm})
    message = f"the default algorithm cannot serve: {', '.join(reasons)}"
    response = _json(
        {
            "error": {"code": "unavailable", "reason": reasons[0], "message": message},
            "reasons": reasons,
        },
        status=503,
    )
    response.headers["Retry-After"] = "1"
    return response


ROUTES: tuple[tuple[str, Handler], ...] = (
    ("/v1/ids", default),
    ("/v1/ids/snowflake", snowflake),
    ("/v1/ids/uuid7", uuid7),
    ("/v1/ids/uuid4", uuid4),
    ("/v1/ids/segment", segment_default),
    ("/v1/ids/segment/{tag}", segment),
    ("/v1/ids/snowflake/{id}/parse", parse),
    ("/v1/ids/{algorithm}", unknown_algorithm),
    ("/v1/info", info),
    ("/healthz", healthz),
    ("/readyz", readyz),
)


def add_routes(
    router: web.UrlDispatcher,
    *,
    guard: bool,
    extra: tuple[tuple[str, Handler], ...] = (),
    timed: Callable[[str, Handler], Handler] | None = None,
) -> None:
    """The API's GET routes, JSON 405s for other methods and a JSON 404 for the rest.

    `guard` wraps each handler with the error mapping, for an app that has no
    error middleware; `timed(path, handler)` wraps it with a latency observation.
    """
    for path, handler in (*ROUTES, *extra):
        if timed is not None:
            handler = timed(path, handler)
        router.add_get(path, http_errors.guarded(handler) if guard else handler)
        router.add_route("*", path, http_errors.method_not_allowed)
    router.add_route("*", "/{tail:.*}", http_errors.not_found)
