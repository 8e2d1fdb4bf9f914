"""Optional middlewares: API keys, the rate limit and the audit log.

Each is installed only when its settings ask for it, so a sidecar with none
configured pays nothing per request.  Probes and metrics (`OPEN_PATHS`) need
no key and are not rate limited: a kubelet or Prometheus must never be locked
out of seeing why the sidecar is unhealthy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import pathlib
import sys
import time
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from nebula_id import errors, logs
from nebula_id import settings as settings_mod
from nebula_id.clock import Clock
from nebula_id.core import ratelimit

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
AUDIT_LOGGER = "nebula_id.audit"


def load_api_keys(settings: settings_mod.ServeSettings) -> tuple[str, ...]:
    """Keys from the settings plus the keys file (one a line, # comments)."""
    found = list(settings.auth_api_keys)
    if settings.auth_api_keys_file:
        path = pathlib.Path(settings.auth_api_keys_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise errors.ConfigError(
                f"auth_api_keys_file {path} cannot be read: {e.strerror}"
            ) from e
        found += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not found:
            raise errors.ConfigError(f"auth_api_keys_file {path} holds no keys")
    return tuple(found)


def key_id(key: str) -> str:
    """A short, non-reversible name for a key, for logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def presented_key(request: web.Request) -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def auth_middleware(api_keys: Iterable[str]) -> Middleware:
    encoded = tuple(k.encode() for k in api_keys)

    @web.middleware
    async def check_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        key = presented_key(request)
        if key is None:
            raise errors.Unauthorized("an API key is required: X-API-Key or Authorization: Bearer")
        given = key.encode()
        # Compare against every key, so the time taken does not say which matched.
        matched = False
        for candidate in encoded:
            matched |= hmac.compare_digest(given, candidate)
        if not matched:
            raise errors.Unauthorized("the API key is not valid")
        return await handler(request)

    return check_api_key


def rate_limit_middleware(*, rate: float, burst: int, clock: Clock) -> Middleware:
    bucket = ratelimit.TokenBucket(rate=rate, burst=burst, clock=clock)

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            wait = bucket.try_take()
            if wait > 0:
                raise errors.RateLimited(
                    f"more than {rate:g} requests per second (burst {burst})", retry_after=wait
                )
        return await handler(request)

    return limit


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
            "path": request.path_qs,
            "status": response.status,
            "key": key_id(key) if key else None,
            "ms": round((time.monotonic() - started) * 1000, 3),
        }
        logger.info(
            "%s %s %d", request.method, request.path_qs, response.status, extra={"fields": record}
        )
        return response

    return audit
