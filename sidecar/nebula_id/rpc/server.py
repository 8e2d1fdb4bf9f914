"""`nebula_id.v1.Ids` on grpc.aio, in the aiohttp app's event loop.

The servicer reads the same sources, API keys, rate-limit bucket and request
counters as the HTTP routes, so a client gets the same IDs, limits and errors
whichever door it uses.  Errors become status codes (`STATUS_BY_CODE`) with
``"<reason>: <message>"`` as the details and the code, reason and Retry-After
also as trailing metadata.  The standard ``grpc.health.v1.Health`` service
follows /readyz: SERVING when the default algorithm can serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TypeVar

from aiohttp import web

from nebula_id import errors
from nebula_id.core import layout as layouts
from nebula_id.core import uuids
from nebula_id.core.jsontypes import JsonValue
from nebula_id.http import errors as http_errors
from nebula_id.http import guards, keys, routes
from nebula_id.http import stats as stats_mod

try:
    import grpc
    from google.protobuf import json_format, struct_pb2
except ModuleNotFoundError as e:  # grpcio and protobuf come with the `grpc` extra
    raise errors.ConfigError(
        f"serving gRPC (--grpc-port) needs {e.name}: pip install 'nebula-id[grpc]'"
    ) from e

try:
    from nebula_id.rpc import ids_pb2, ids_pb2_grpc
except ImportError as e:  # the build generates them; a bare checkout may not have yet
    raise errors.ConfigError(
        "the gRPC code is not generated: run `python sidecar/nebula_id/rpc/codegen.py` "
        f"(needs grpcio-tools; pip install 'nebula-id[grpc]'): {e}"
    ) from e

log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Reply = TypeVar("_Reply")

SERVICE_NAME = "nebula_id.v1.Ids"
HEALTH_INTERVAL_S = 1.0
STATUS_BY_CODE: dict[str, grpc.StatusCode] = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthorized": grpc.StatusCode.UNAUTHENTICATED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}
_NUMERIC = frozenset({"snowflake", "segment"})


class IdsServicer(ids_pb2_grpc.IdsServicer):
    """The five methods of ids.proto over one app's sources."""

    def __init__(
        self,
        app: web.Application,
        *,
        key_check: guards.KeyCheck | None,
        rate_limit: guards.RateLimit | None,
    ) -> None:
        self._app = app
        self._pool = app[keys.POOL]
        self._snowflake = app[keys.SNOWFLAKE]
        self._segments = app[keys.SEGMENTS]
        self._stats: stats_mod.RequestStats = app[keys.STATS]
        self._key_check = key_check
        self._rate_limit = rate_limit

    # --- the methods ----------------------------------------------------------------

    async def Next(
        self,
        request: ids_pb2.NextRequest,
        context: grpc.aio.ServicerContext[ids_pb2.NextRequest, ids_pb2.NextReply],
    ) -> ids_pb2.NextReply:
        try:
            self._guard(context)
            name, tag = self._which(request.algorithm, request.tag)
            if name == "snowflake":
                reply = ids_pb2.NextReply(id=self._snowflake.next_id())
            elif name == "segment":
                (value,) = await self._segments.next_ids(tag, 1)
                reply = ids_pb2.NextReply(id=value)
            else:
                reply = ids_pb2.NextReply(uuid=uuids.uuid7() if name == "uuid7" else uuids.uuid4())
            self._stats.singles[name] += 1
            return reply
        except errors.NebulaIdError as e:
            await self._abort(context, e)
            raise  # not reached: abort raises

    async def Batch(
        self,
        request: ids_pb2.BatchRequest,
        context: grpc.aio.ServicerContext[ids_pb2.BatchRequest, ids_pb2.BatchReply],
    ) -> ids_pb2.BatchReply:
        try:
            caller = self._guard(context, take_token=False)
            name, tag = self._which(request.algorithm, request.tag)
            count = self._count(request.count, "count")
            if self._rate_limit is not None:
                self._rate_limit.take(caller, count)
            reply = await self._batch(name, tag, count)
            self._stats.served(name, count)
            return reply
        except errors.NebulaIdError as e:
            await self._abort(context, e)
            raise

    async def Stream(
        self,
        request: ids_pb2.StreamRequest,
        context: grpc.aio.ServicerContext[ids_pb2.StreamRequest, ids_pb2.BatchReply],
    ) -> AsyncIterator[ids_pb2.BatchReply]:
        try:
            caller = self._guard(context, take_token=False)
            name, tag = self._which(request.algorithm, request.tag)
            size = self._count(request.batch_size or self._max_batch, "batch_size")
            if self._rate_limit is not None:
                size = min(size, self._rate_limit.burst)
            if request.total < 1:
                raise errors.InvalidArgument("total must be at least 1")
            left = request.total
            while left > 0:
                count = min(size, left)
                await self._wait_for_tokens(caller, count)
                reply = await self._batch(name, tag, count)
                self._stats.served(name, count)
                left -= count
                yield reply
        except errors.NebulaIdError as e:
            await self._abort(context, e)

    async def Parse(
        self,
        request: ids_pb2.ParseRequest,
        context: grpc.aio.ServicerContext[ids_pb2.ParseRequest, ids_pb2.ParseReply],
    ) -> ids_pb2.ParseReply:
        try:
            self._guard(context)
            parsed = self._pool.layout.parse_text(str(request.id))
            return ids_pb2.ParseReply(
                id=parsed.id,
                timestamp_ms=parsed.timestamp_ms,
                timestamp=layouts.format_epoch(parsed.timestamp_ms),
                datacenter=parsed.datacenter,
                worker=parsed.worker,
                sequence=parsed.sequence,
            )
        except errors.NebulaIdError as e:
            await self._abort(context, e)
            raise

    async def Info(
        self,
        request: ids_pb2.InfoRequest,
        context: grpc.aio.ServicerContext[ids_pb2.InfoRequest, ids_pb2.InfoReply],
    ) -> ids_pb2.InfoReply:
        try:
            self._guard(context)
            info = routes.info_json(self._app)
            details = struct_pb2.Struct()
            json_format.ParseDict(_jsonable_object(info), details)
            return ids_pb2.InfoReply(
                version=info["version"],
                mode=info["mode"],
                pool=info["pool"],
                algorithm=info["algorithm"],
                max_batch_size=info["maxBatchSize"],
                datacenter=info["datacenter"],
                details=details,
            )
        except errors.NebulaIdError as e:
            await self._abort(context, e)
            raise

    # --- shared steps ---------------------------------------------------------------------

    @property
    def _max_batch(self) -> int:
        return self._pool.sidecar.max_batch_size

    def _guard(
        self, context: grpc.aio.ServicerContext[_Req, _Reply], *, take_token: bool = True
    ) -> str:
        """The API key (``x-api-key`` or ``authorization: Bearer`` metadata), then a token.

        Returns the caller whose bucket the call is charged to (its key, else its peer).
        """
        if self._key_check is None and self._rate_limit is None:
            return ""  # nothing to check, no bucket to charge: no metadata or peer to read
        metadata = dict(context.invocation_metadata() or ())
        key = guards.key_from(
            _text(metadata.get("x-api-key")), _text(metadata.get("authorization"))
        )
        if self._key_check is not None:
            self._key_check.check(key)
        caller = "key:" + guards.key_id(key) if key is not None else _peer_host(context.peer())
        if take_token and self._rate_limit is not None:
            self._rate_limit.take(caller)
        return caller

    async def _wait_for_tokens(self, caller: str, count: int) -> None:
        """A stream waits for the rate limit instead of failing halfway."""
        if self._rate_limit is None:
            return
        while True:
            try:
                self._rate_limit.take(caller, count)
                return
            except errors.RateLimited as e:
                await asyncio.sleep(e.retry_after)

    def _which(self, algorithm: str, tag: str) -> tuple[str, str]:
        """(algorithm, segment tag) of a request; "" means the pool's default."""
        name = algorithm or self._pool.algorithm
        if name not in routes.ALGORITHM_NAMES:
            raise errors.UnknownAlgorithm(
                f"unknown algorithm {name!r}; use one of: {', '.join(routes.ALGORITHM_NAMES)}"
            )
        if name != "segment":
            if tag:
                raise errors.InvalidArgument(f"tag is only for segment, not {name}")
            return name, ""
        if not tag:
            tags = self._segments.tags()
            if not tags:
                raise errors.NotFound("no segment tags are configured")
            tag = tags[0]
        return name, tag

    def _count(self, count: int, field: str) -> int:
        limit = self._max_batch
        if not 1 <= count <= limit:
            raise errors.InvalidArgument(
                f"{field} must be from 1 to {limit} (maxBatchSize is {limit}), got {count}"
            )
        return count

    async def _batch(self, name: str, tag: str, count: int) -> ids_pb2.BatchReply:
        if name == "snowflake":
            return ids_pb2.BatchReply(ids=self._snowflake.next_ids(count))
        if name == "segment":
            return ids_pb2.BatchReply(ids=await self._segments.next_ids(tag, count))
        batch = uuids.uuid7_batch if name == "uuid7" else uuids.uuid4_batch
        return ids_pb2.BatchReply(uuids=batch(count))

    async def _abort(
        self, context: grpc.aio.ServicerContext[_Req, _Reply], exc: errors.NebulaIdError
    ) -> None:
        reason = http_errors.reason_of(exc)
        self._stats.failed(exc.http_status, exc.code, reason)
        trailers: list[tuple[str, str]] = [
            ("nebula-id-code", exc.code),
            ("nebula-id-reason", reason),
        ]
        retry_after = http_errors.retry_after_of(exc)
        if retry_after is not None:
            trailers.append(("retry-after", str(max(1, math.ceil(retry_after)))))
        status = STATUS_BY_CODE.get(exc.code, grpc.StatusCode.INTERNAL)
        await context.abort(status, f"{reason}: {exc.message}", tuple(trailers))


def _peer_host(peer: str) -> str:
    """The caller of a peer without auth: its host (as HTTP's ``request.remote``), not port."""
    kind, _, address = peer.partition(":")
    if kind == "ipv4":
        return "peer:" + address.rpartition(":")[0]
    if kind == "ipv6":
        return "peer:" + address.rpartition(":")[0].strip("[]")
    return "peer:unix"


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _jsonable_object(value: Mapping[str, object]) -> dict[str, JsonValue]:
    return {str(k): _jsonable(v) for k, v in value.items()}


def _jsonable(value: object) -> JsonValue:
    """`value` with what Struct cannot hold (ints beyond 2**53 aside) made plain JSON."""
    if isinstance(value, dict):
        return _jsonable_object(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# --- the server as a resource of the app ----------------------------------------------------


def serving_ctx(
    *, key_check: guards.KeyCheck | None, rate_limit: guards.RateLimit | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A `cleanup_ctx` that serves gRPC on `grpc_port` while the app runs."""

    async def grpc_ctx(app: web.Application) -> AsyncIterator[None]:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        settings = app[keys.SETTINGS]
        server = grpc.aio.server()
        servicer = IdsServicer(app, key_check=key_check, rate_limit=rate_limit)
        ids_pb2_grpc.add_IdsServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        http = settings.http
        address = f"{http.host}:{http.grpc_port}"
        credentials = _credentials(http.tls_cert_file, http.tls_key_file)
        try:
            if credentials is not None:
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise errors.ConfigError(f"cannot listen for gRPC on {address}: {e}") from e
        app[keys.GRPC_PORT] = port
        await server.start()
        log.info("gRPC serving on %s:%d", http.host, port)

        async def follow_readiness() -> None:
            serving, not_serving = (
                health_pb2.HealthCheckResponse.SERVING,
                health_pb2.HealthCheckResponse.NOT_SERVING,
            )
            while True:
                status = not_serving if routes.not_ready_reasons(app) else serving
                for name in ("", SERVICE_NAME):
                    await health_servicer.set(name, status)
                await asyncio.sleep(HEALTH_INTERVAL_S)

        follower = asyncio.get_running_loop().create_task(follow_readiness())
        try:
            yield
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await health_servicer.enter_graceful_shutdown()
            await server.stop(grace=2.0)

    return grpc_ctx


def _credentials(cert_file: str | None, key_file: str | None) -> grpc.ServerCredentials | None:
    if not cert_file or not key_file:
        return None
    with open(cert_file, "rb") as cert, open(key_file, "rb") as key:
        return grpc.ssl_server_credentials([(key.read(), cert.read())])


__all__: Sequence[str] = ("STATUS_BY_CODE", "IdsServicer", "serving_ctx")
