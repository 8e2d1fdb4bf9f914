"""The HTTP API of DESIGN.md: IDs, parse, info and the probes.

Handlers only translate: query and path in, a source call, bytes out.  The
single-ID path is the hot one (the target is 0.9x a plain aiohttp app), so it
formats JSON by hand, reads the query string only when there is one, and a
handler that needs no I/O is a plain function: `http_errors.guarded` is then
the request's only coroutine.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web, web_urldispatcher
from aiohttp.typedefs import Handler

from nebula_id import __version__, errors
from nebula_id.core import layout as layouts
from nebula_id.core import uuids
from nebula_id.http import errors as http_errors
from nebula_id.http import keys
from nebula_id.http import stats as stats_mod

ALGORITHM_NAMES = ("snowflake", "segment", "uuid7", "uuid4")
JSON = "application/json"
TEXT = "text/plain"
# Passing the header beats `content_type=`, which re-parses it on every response.
_JSON_HEADERS = {"Content-Type": JSON, "Server": stats_mod.SERVER}
_TEXT_HEADERS = {"Content-Type": TEXT + "; charset=utf-8", "Server": stats_mod.SERVER}
BINARY = "application/octet-stream"
_BINARY_HEADERS = {"Content-Type": BINARY, "Server": stats_mod.SERVER}


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


def _many_ints(request: web.Request, ids: list[int]) -> web.Response:
    """A batch of 64-bit IDs; as big-endian int64s when the client accepts only those.

    The binary form is what the Python client asks for: decoding it costs a
    tenth of decoding the JSON, which matters when the app takes each ID alone.
    """
    accept = request.headers.get("Accept")
    if accept == BINARY:
        packed = struct.pack(f">{len(ids)}q", *ids)
        return web.Response(body=packed, headers=_BINARY_HEADERS)
    return _many(request, map(str, ids))


def _json(payload: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload, default=str).encode(),
        content_type=JSON,
        headers={"Server": stats_mod.SERVER},
    )


# --- IDs -------------------------------------------------------------------------------


def snowflake(request: web.Request) -> web.Response:
    """Synchronous, like every answer that needs no I/O: no coroutine per request."""
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
    return _many_ints(request, ids)


def _uuid_handler(
    name: str, one: Callable[[], str], batch: Callable[[int], list[str]]
) -> Callable[[web.Request], web.Response]:
    def handler(request: web.Request) -> web.Response:
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


def _segment_ids(request: web.Request, tag: str) -> web.Response | Awaitable[web.Response]:
    """A single ID from the buffer without a coroutine; anything else awaits the source."""
    if not request.query_string:
        app = request.app
        value = app[keys.SEGMENTS].take_one(tag)
        if value is not None:
            app[keys.STATS].singles["segment"] += 1
            if _wants_text(request):
                return web.Response(body=b"%d\n" % value, headers=_TEXT_HEADERS)
            return web.Response(body=b'{"id":"%d"}' % value, headers=_JSON_HEADERS)
    return _segment_ids_awaited(request, tag)


async def _segment_ids_awaited(request: web.Request, tag: str) -> web.Response:
    source = request.app[keys.SEGMENTS]
    count = _count(request) if request.query_string else None
    ids = await source.next_ids(tag, count or 1)
    stats = request.app[keys.STATS]
    if count is None:
        stats.singles["segment"] += 1
        return _one(request, str(ids[0]))
    stats.served("segment", count)
    return _many_ints(request, ids)


def segment(request: web.Request) -> web.Response | Awaitable[web.Response]:
    return _segment_ids(request, request.match_info["tag"])


def _default_tag(request: web.Request) -> str:
    tags = request.app[keys.SEGMENTS].tags()
    if not tags:
        raise errors.NotFound("no segment tags are configured")
    return tags[0]


def segment_default(request: web.Request) -> web.Response | Awaitable[web.Response]:
    """`/v1/ids/segment` without a tag: the pool's first tag."""
    return _segment_ids(request, _default_tag(request))


def default(request: web.Request) -> web.Response | Awaitable[web.Response]:
    """`/v1/ids`: the pool's default algorithm (only Segment needs to await)."""
    algorithm = request.app[keys.POOL].algorithm
    if algorithm == "snowflake":
        return snowflake(request)
    if algorithm == "uuid7":
        return uuid7(request)
    if algorithm == "uuid4":
        return uuid4(request)
    return segment_default(request)


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


def info_json(app: web.Application) -> dict[str, Any]:
    """The answer of /v1/info (and of gRPC's Info)."""
    pool = app[keys.POOL]
    settings = app[keys.SETTINGS]
    snowflake_source = app[keys.SNOWFLAKE]
    segments = app[keys.SEGMENTS]
    return {
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


async def info(request: web.Request) -> web.Response:
    return _json(info_json(request.app))


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


def not_ready_reasons(app: web.Application) -> list[str]:
    """Why the default algorithm cannot serve now (empty when it can)."""
    if keys.POOL not in app:  # still starting (asked through the probe server)
        return ["not_ready"]
    algorithm = app[keys.POOL].algorithm
    if algorithm == "snowflake":
        reason = app[keys.SNOWFLAKE].ready_reason() if keys.SNOWFLAKE in app else "not_ready"
    elif algorithm == "segment":
        reason = app[keys.SEGMENTS].ready_reason() if keys.SEGMENTS in app else "not_ready"
    else:
        reason = None  # UUIDs need nothing but the process
    return [] if reason is None else [reason]


async def readyz(request: web.Request) -> web.Response:
    return readiness(request.app)


def readiness(app: web.Application) -> web.Response:
    """The /readyz answer for `app` (the probe server asks about the API's app)."""
    reasons = not_ready_reasons(app)
    if not reasons:
        return _json({"status": "ready", "algorithm": app[keys.POOL].algorithm})
    message = f"the default algorithm cannot serve: {', '.join(reasons)}"
    return http_errors.json_error(
        errors.Unavailable.http_status,
        errors.Unavailable.code,
        reasons[0],
        message,
        retry_after=1.0,
        extra={"reasons": reasons},
    )


SEGMENT_TAG_PATH = "/v1/ids/segment/{tag}"


class _TagResource(web_urldispatcher.DynamicResource):
    """`/v1/ids/segment/{tag}`, matched by slicing the path instead of a regex.

    Tags come from the pool, which is read after the router is frozen (and may
    change on reload), so they cannot be plain routes; this resource matches
    exactly what aiohttp's ``{tag}`` pattern (``[^{}/]+``) matches, and leaves
    percent-encoded tags to that pattern's decoding.
    """

    _PREFIX = SEGMENT_TAG_PATH.partition("{")[0]

    def _match(self, path: str) -> dict[str, str] | None:
        prefix = self._PREFIX
        if not path.startswith(prefix):
            return None
        tag = path[len(prefix) :]
        if not tag or "/" in tag or "{" in tag or "}" in tag:
            return None
        if "%" in tag:
            return super()._match(path)
        return {"tag": tag}


ROUTES: tuple[tuple[str, http_errors.AnyHandler], ...] = (
    ("/v1/ids", default),
    ("/v1/ids/snowflake", snowflake),
    ("/v1/ids/uuid7", uuid7),
    ("/v1/ids/uuid4", uuid4),
    # Before `/v1/ids/segment`: both sit under that index key, and the tagged
    # path is the busier one, so it is tried first.
    (SEGMENT_TAG_PATH, segment),
    ("/v1/ids/segment", segment_default),
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
    timed: Callable[[str, http_errors.AnyHandler], http_errors.AnyHandler] | None = None,
) -> None:
    """The API's GET routes, JSON 405s for other methods and a JSON 404 for the rest.

    `guard` wraps each handler with the error mapping, for an app that has no
    error middleware; otherwise synchronous handlers get a plain async adapter.
    `timed(path, handler)` wraps the (plain) handler with a latency
    observation first, so that the guard stays the request's one coroutine.
    """
    for path, handler in (*ROUTES, *extra):
        inner: http_errors.AnyHandler = handler
        if timed is not None:
            inner = timed(path, inner)
        wrapped = http_errors.guarded(inner) if guard else http_errors.as_async(inner)
        # HEAD runs the GET handler: on an ID path it would consume IDs it never shows.
        issues_ids = path.startswith("/v1/ids")
        not_allowed = (
            http_errors.method_not_allowed_get_only
            if issues_ids
            else http_errors.method_not_allowed
        )
        if path == SEGMENT_TAG_PATH:
            resource = _TagResource(path)
            router.register_resource(resource)
            resource.add_route("GET", wrapped)
            resource.add_route("*", not_allowed)
            continue
        router.add_get(path, wrapped, allow_head=not issues_ids)
        router.add_route("*", path, not_allowed)
    router.add_route("*", "/{tail:.*}", http_errors.not_found)
