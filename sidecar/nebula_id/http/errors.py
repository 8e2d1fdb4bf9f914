"""The one place where failures become HTTP answers.

Every answer that is not an ID has the shape
``{"error": {"code": ..., "reason": ..., "message": ...}}``.  `nebula_id.errors`
types carry their code and status; 429 (`RateLimited`) and 503 (`Unavailable`)
add ``Retry-After``.  Status, code, reason and wait come from the error's class
alone (`reason_of`, `retry_after_of`, which the gRPC server shares).  aiohttp's
own 404/405 get the same shape, and anything unexpected becomes a logged 500
that never leaks a traceback.

`error_response` is the mapping; two thin doors lead to it.  `error_middleware`
is installed when other middlewares (auth, rate limit, audit) are, since they
raise outside any handler.  Without them the sidecar runs with no middleware at
all, because an aiohttp middleware costs about as much CPU per request as
issuing the ID and formatting the answer together: then `guarded` wraps each
handler, and `not_found` / `method_not_allowed` routes answer what the router
would otherwise answer in plain text.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from nebula_id import errors
from nebula_id.http import keys
from nebula_id.http import stats as stats_mod

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "invalid_argument",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "invalid_argument",
    429: "rate_limited",
    503: "unavailable",
}


def reason_of(exc: errors.NebulaIdError) -> str:
    """The public reason: a 503 names why; other errors repeat their code."""
    if isinstance(exc, errors.Unavailable):
        return exc.reason
    return exc.code


def retry_after_of(exc: errors.NebulaIdError) -> float | None:
    """Seconds for ``Retry-After``: only "try again later" errors (429, 503) have them."""
    return exc.retry_after


def json_error(
    status: int,
    code: str,
    reason: str,
    message: str,
    *,
    retry_after: float | None = None,
    stats: stats_mod.RequestStats | None = None,
    extra: Mapping[str, object] | None = None,
) -> web.Response:
    """The error answer; `extra` adds top-level fields beside ``error``."""
    body: dict[str, object] = {"error": {"code": code, "reason": reason, "message": message}}
    if extra:
        body.update(extra)
    headers = {"Server": stats_mod.SERVER}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if stats is not None:
        stats.failed(status, code, reason)
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def error_response(
    exc: errors.NebulaIdError, stats: stats_mod.RequestStats | None = None
) -> web.Response:
    return json_error(
        exc.http_status,
        exc.code,
        reason_of(exc),
        exc.message,
        retry_after=retry_after_of(exc),
        stats=stats,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.NebulaIdError as e:
        return error_response(e, request.app.get(keys.STATS))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "http_error")
        message = e.reason if e.status != 404 else f"no route for {request.path}"
        return json_error(e.status, code, code, message, stats=request.app.get(keys.STATS))
    except Exception:
        return _unexpected(request)


def _unexpected(request: web.Request) -> web.Response:
    log.exception("unexpected error serving %s %s", request.method, request.path)
    return json_error(
        500, "internal", "internal", "internal error", stats=request.app.get(keys.STATS)
    )


AnyHandler = Callable[[web.Request], web.StreamResponse | Awaitable[web.StreamResponse]]
"""A route's handler: a coroutine function, or a plain function when it needs no I/O
(its answer, or an awaitable of it, is returned straight away)."""


def guarded(handler: AnyHandler) -> Handler:
    """`handler` with our errors mapped, for an app without middlewares.

    This wrapper is the one coroutine of a request in such an app: a plain
    function handler runs inside it without a coroutine of its own.
    """

    async def guarded_handler(request: web.Request) -> web.StreamResponse:
        try:
            answer = handler(request)
            if not isinstance(answer, web.StreamResponse):
                answer = await answer
            return answer
        except errors.NebulaIdError as e:
            return error_response(e, request.app.get(keys.STATS))
        except web.HTTPException:
            raise
        except Exception:
            return _unexpected(request)

    guarded_handler.__name__ = getattr(handler, "__name__", "handler")
    return guarded_handler


def as_async(handler: AnyHandler) -> Handler:
    """`handler` as the coroutine function aiohttp expects (the middlewares map errors)."""
    if inspect.iscoroutinefunction(handler):
        return handler

    async def answer(request: web.Request) -> web.StreamResponse:
        result = handler(request)
        if not isinstance(result, web.StreamResponse):
            result = await result
        return result

    answer.__name__ = getattr(handler, "__name__", "handler")
    return answer


async def not_found(request: web.Request) -> web.Response:
    """The last route: any path the API does not have."""
    return json_error(
        404, "not_found", "not_found", f"no route for {request.path}", stats=request.app[keys.STATS]
    )


def _method_not_allowed(request: web.Request, allow: str) -> web.Response:
    response = json_error(
        405,
        "method_not_allowed",
        "method_not_allowed",
        f"{request.method} is not allowed on {request.path}; use GET",
        stats=request.app[keys.STATS],
    )
    response.headers["Allow"] = allow
    return response


async def method_not_allowed(request: web.Request) -> web.Response:
    """Any method but GET on a path the API has."""
    return _method_not_allowed(request, "GET, HEAD")


async def method_not_allowed_get_only(request: web.Request) -> web.Response:
    """Any method but GET on a path that issues IDs (HEAD too: it would spend IDs)."""
    return _method_not_allowed(request, "GET")
