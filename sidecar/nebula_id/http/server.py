"""Serving an app so that even a request aiohttp cannot parse gets the JSON error shape.

aiohttp answers a request it cannot parse (a request line or header line
longer than 8190 bytes, more than 128 headers, a malformed line) itself, in
``RequestHandler.handle_error``, before any route or middleware runs, and in
plain text with a ``Server`` header naming its version.  `JsonErrorRunner`
serves an app through connections whose ``handle_error`` answers such 4xx in
the API's ``{"error": {...}}`` shape (``invalid_argument``, 400) instead,
logged as one line without the request's bytes; 5xx answers stay aiohttp's.
`run` is ``web.run_app`` with that runner: the same sites, signals
(SIGTERM/SIGINT shut down gracefully) and loop teardown.

aiohttp has no public hook for that answer, so two private names are used:
``AppRunner._make_server`` and ``Server._kwargs``.  Were either to change,
start-up would fail at once, and ``tests/api/test_oversized_requests.py``
checks the answers of a real ``nebula-id serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from nebula_id.http import errors as http_errors
from nebula_id.http import keys
from nebula_id.http import stats as stats_mod

log = logging.getLogger(__name__)


def describe(exc: BaseException | None, message: str | None) -> str:
    """A short message for an unparsable request, without echoing its bytes."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        size = f"{limit} bytes" if limit is not None else "the limit"
        return f"the request line or a header line is longer than {size}"
    if message and message.startswith("Too many headers"):
        return "the request has more headers than the limit"
    kind = f" ({type(exc).__name__})" if exc is not None else ""
    return f"malformed request{kind}"


class JsonErrorHandler(web.RequestHandler):
    """A connection whose unparsable requests get a JSON 4xx."""

    __slots__ = ("_stats",)

    # `kwargs` are the connection settings aiohttp passes on as `**kwargs: Any` itself.
    def __init__(self, manager: JsonErrorServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._stats = manager.stats

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not 400 <= status < 500:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            # As aiohttp does: an answer already begun cannot be replaced.
            raise ConnectionError("an answer was already sent; cannot send the error")
        text = describe(exc, message)
        # One line, no traceback and none of the request's bytes: a client's
        # malformed request is not a server error, and may carry a secret.
        log.info("unparsable request from %s answered %d: %s", request.remote, status, text)
        # aiohttp's parser answers 400 only: the documented invalid_argument.
        answer = http_errors.json_error(
            status, "invalid_argument", "invalid_argument", text, stats=self._stats
        )
        answer.force_close()
        return answer


class JsonErrorServer(web.Server):
    """``web.Server`` whose connections are `JsonErrorHandler`s."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        stats: stats_mod.RequestStats | None = None,
        **kwargs: Any,  # web.Server's own connection settings, typed Any by aiohttp
    ) -> None:
        super().__init__(handler, **kwargs)
        self.stats = stats

    @classmethod
    def replacing(cls, server: web.Server, stats: stats_mod.RequestStats | None) -> JsonErrorServer:
        """The same server (handler, request factory, connection settings), with JSON errors.

        ``_kwargs`` holds the connection settings the app and runner gave the
        server (access log, debug, handler_args); ``web.Server`` keeps no
        public copy of them.
        """
        return cls(
            server.request_handler,
            stats=stats,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **server._kwargs,
        )

    def __call__(self) -> web.RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """``web.AppRunner`` serving through a `JsonErrorServer`.

    Unparsable requests are counted in the app's `RequestStats` when it has one.
    """

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return JsonErrorServer.replacing(server, self.app.get(keys.STATS))


async def _serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    sock: socket.socket | None,
    ssl_context: ssl.SSLContext | None,
    shutdown_timeout: float,
) -> None:
    runner = JsonErrorRunner(
        app, handle_signals=True, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
        if sock is not None:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        # Everything made during start-up lives as long as the process: moved out
        # of the collector's generations, full collections no longer walk it, which
        # keeps their pauses (and the latency tail) short.
        gc.collect()
        gc.freeze()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    sock: socket.socket | None = None,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 5.0,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Serve `app` until SIGTERM or SIGINT, then shut down gracefully and close `loop`.

    An ``OSError`` from binding (or from the app's start-up) propagates.
    """
    main = loop.create_task(
        _serve(
            app,
            host=host,
            port=port,
            sock=sock,
            ssl_context=ssl_context,
            shutdown_timeout=shutdown_timeout,
        )
    )
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
