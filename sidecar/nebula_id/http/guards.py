"""Optional middlewares: API keys with the rate limit, and the audit log.

Each is installed only when its settings ask for it, so a sidecar with none
configured pays nothing per request.  Probes and metrics (`OPEN_PATHS`) need
no key and are not rate limited: a kubelet or Prometheus must never be locked
out of seeing why the sidecar is unhealthy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import math
import pathlib
import sys
import time
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from nebula_id import errors, logs
from nebula_id.clock import Clock
from nebula_id.config import auth as auth_config
from nebula_id.core import ratelimit
from nebula_id.http import errors as http_errors
from nebula_id.http import keys

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
AUDIT_LOGGER = "nebula_id.audit"


def load_api_keys(settings: auth_config.AuthSettings) -> tuple[str, ...]:
    """Keys from the settings plus the keys file (one a line, # comments)."""
    found = list(settings.api_keys)
    if settings.api_keys_file:
        path = pathlib.Path(settings.api_keys_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise errors.ConfigError(
                f"auth_api_keys_file {path} cannot be read: {e.strerror}"
            ) from e
        # One key a line; a comma list on a line works too (as NEBULA_AUTH_API_KEYS).
        found += [
            key.strip()
            for line in lines
            if not line.lstrip().startswith("#")
            for key in line.split(",")
            if key.strip()
        ]
        if not found:
            raise errors.ConfigError(f"auth_api_keys_file {path} holds no keys")
    return tuple(found)


def key_id(key: str) -> str:
    """A short, non-reversible name for a key, for logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def presented_key(request: web.Request) -> str | None:
    return key_from(request.headers.get("X-API-Key"), request.headers.get("Authorization"))


def key_from(api_key: str | None, authorization: str | None) -> str | None:
    """The key of an ``X-API-Key`` value or an ``Authorization: Bearer`` value (HTTP or gRPC)."""
    if api_key:
        return api_key
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class KeyCheck:
    """The configured API keys, compared in constant time."""

    def __init__(self, api_keys: Iterable[str]) -> None:
        self._encoded = tuple(k.encode() for k in api_keys)

    def replace(self, api_keys: Iterable[str]) -> None:
        """Take a new set of keys (rotation); an empty set is refused, the old one kept."""
        encoded = tuple(k.encode() for k in api_keys)
        if not encoded:
            raise errors.ConfigError("the new set of API keys is empty")
        self._encoded = encoded

    def check(self, key: str | None) -> None:
        """Return when `key` is one of ours; `errors.Unauthorized` otherwise."""
        if key is None:
            raise errors.Unauthorized("an API key is required: X-API-Key or Authorization: Bearer")
        given = key.encode()
        # Compare against every key, so the time taken does not say which matched.
        matched = False
        for candidate in self._encoded:
            matched |= hmac.compare_digest(given, candidate)
        if not matched:
            raise errors.Unauthorized("the API key is not valid")


@dataclasses.dataclass(frozen=True, slots=True)
class Quota:
    """What one caller has left: the ``X-RateLimit-*`` headers of an answer."""

    limit: int
    remaining: int
    reset_s: float

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_s)),
        }


class RateLimited(errors.RateLimited):
    """`errors.RateLimited` carrying the caller's quota for the headers."""

    def __init__(self, message: str, *, retry_after: float, quota: Quota) -> None:
        super().__init__(message, retry_after=retry_after)
        self.quota = quota


class RateLimit:
    """A token bucket per caller (API key, or peer without auth), charged one token per ID.

    Shared by HTTP and gRPC.  A batch of `count` IDs costs `count` tokens, so a
    caller cannot take more IDs per second than the rate by asking in batches,
    and one caller's traffic never uses up another's bucket.
    """

    def __init__(self, *, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets = ratelimit.Buckets(rate=rate, burst=burst, clock=clock)

    def take(self, caller: str = "", cost: int = 1) -> Quota:
        """Charge `caller` `cost` tokens; `RateLimited` (with the wait) when it has not enough."""
        if cost > self.burst:
            raise errors.InvalidArgument(
                f"count {cost} is more than the rate limit allows at once ({self.burst}); "
                f"ask for at most {self.burst} IDs per request"
            )
        bucket = self._buckets.bucket(caller)
        wait = bucket.try_take(cost)
        quota = Quota(limit=self.burst, remaining=bucket.remaining, reset_s=bucket.full_in)
        if wait > 0:
            raise RateLimited(
                f"more than {self.rate:g} IDs per second for this caller (burst {self.burst})",
                retry_after=wait,
                quota=quota,
            )
        return quota


def caller_of(request: web.Request, key: str | None) -> str:
    """Whose bucket a request uses: its API key's id, else its peer address."""
    if key is not None:
        return "key:" + key_id(key)
    return "peer:" + (request.remote or "unix")


def cost_of(request: web.Request) -> int:
    """Tokens a request costs: its `count` (1 without one, or when it is malformed)."""
    text = request.query.get("count")
    if text is None or not text.isdigit():
        return 1
    return max(1, min(int(text), 1_000_000))


SECRET_PARAMETERS = frozenset(
    {"api_key", "apikey", "api-key", "key", "token", "access_token", "x-api-key", "auth"}
)
"""Query parameters that would carry a credential: refused, and never logged."""


def refuse_keys_in_url(request: web.Request) -> None:
    """A key in the URL ends up in proxies' and browsers' logs: refuse it outright."""
    if any(name.lower() in SECRET_PARAMETERS for name in request.query):
        raise errors.InvalidArgument(
            "API keys are accepted only in the X-API-Key or Authorization: Bearer header, "
            "never in the URL; rotate a key that was sent in one"
        )


def loggable_path(request: web.Request) -> str:
    """The path and query for the audit log, any credential-like value masked."""
    if not request.query_string:
        return request.path
    parts = [
        f"{name}=***" if name.lower() in SECRET_PARAMETERS else f"{name}={value}"
        for name, value in request.query.items()
    ]
    return f"{request.path}?{'&'.join(parts)}"


def guard_middleware(*, key_check: KeyCheck | None, rate_limit: RateLimit | None) -> Middleware:
    """The API key, then the rate limit, in one middleware.

    One, not two: each aiohttp middleware adds a coroutine and a partial per
    request, about a tenth of what the whole single-ID request costs.  With a
    rate limit every answer past the key check carries the caller's
    ``X-RateLimit-*`` headers, errors included.
    """

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        if key_check is not None:
            refuse_keys_in_url(request)
        key = presented_key(request)
        if key_check is not None:
            key_check.check(key)
        if rate_limit is None:
            return await handler(request)
        stats = request.app.get(keys.STATS)
        try:
            quota = rate_limit.take(caller_of(request, key), cost_of(request))
        except RateLimited as e:
            refusal = http_errors.error_response(e, stats)
            refusal.headers.update(e.quota.headers())
            return refusal
        response: web.StreamResponse
        try:
            response = await handler(request)
        except errors.NebulaIdError as e:
            response = http_errors.error_response(e, stats)
        response.headers.update(quota.headers())
        return response

    return guard


class _AuditLine(logging.Formatter):
    """The text format's audit line: the request fields as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(getattr(record, "fields", {}))


def open_audit_log(
    target: str, *, log_format: str = "text", pool: str | None = None
) -> logging.Logger:
    """A logger writing one JSON line per request to `target` (a path, or - for stderr).

    In the text format a line holds the request fields only; in the json format
    it has the stable keys of `nebula_id.logs` too (time, level, logger, message,
    pool), then the request fields.
    """
    # A private logger (not in logging's registry): two apps in one process
    # (tests) must not write into each other's audit logs.
    logger = logging.Logger(AUDIT_LOGGER, logging.INFO)
    logger.propagate = False
    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = logging.FileHandler(target, encoding="utf-8")
        except OSError as e:
            raise errors.ConfigError(f"audit_log {target} cannot be opened: {e.strerror}") from e
    handler.setFormatter(logs.JsonFormatter(pool=pool) if log_format == "json" else _AuditLine())
    logger.addHandler(handler)
    return logger


def close_audit_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def audit_middleware(logger: logging.Logger) -> Middleware:
    @web.middleware
    async def audit(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        response = await handler(request)
        key = presented_key(request)
        record = {
            "time": time.time(),
            "remote": request.remote,
            "method": request.method,
            "path": loggable_path(request),
            "status": response.status,
            "key": key_id(key) if key else None,
            "ms": round((time.monotonic() - started) * 1000, 3),
        }
        logger.info(
            "%s %s %d", request.method, record["path"], response.status, extra={"fields": record}
        )
        return response

    return audit
