"""Our own exception hierarchy.

Every failure a user can see is one of these.  The HTTP layer maps them to
status codes in one middleware (`nebula_id.http.errors`), and the operator maps
them to kopf errors in one place.  Adapters chain the library error with
``raise ... from e`` so no raw asyncpg or aiohttp exception crosses the API.
"""

from __future__ import annotations


class NebulaIdError(Exception):
    """Base of every nebula-id error.

    `code` is the public error code of the HTTP API and `http_status` its status.
    """

    code = "internal"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- 400 -----------------------------------------------------------------------


class InvalidArgument(NebulaIdError):
    """A request or a setting is malformed; the message names the problem."""

    code = "invalid_argument"
    http_status = 400


class InvalidLayout(InvalidArgument):
    """A Snowflake layout, epoch or ID does not fit together."""


class InvalidPool(InvalidArgument):
    """A pool spec fails validation, or would break uniqueness if applied."""


class ConfigError(InvalidArgument):
    """A configuration value (flag, env var, file) is invalid at start-up."""


# --- 401 / 404 / 429 ---------------------------------------------------------------


class Unauthorized(NebulaIdError):
    code = "unauthorized"
    http_status = 401


class NotFound(NebulaIdError):
    code = "not_found"
    http_status = 404


class UnknownTag(NotFound):
    """A segment tag that the pool does not define."""

    def __init__(self, tag: str, known: list[str]) -> None:
        listed = ", ".join(sorted(known)) or "none configured"
        super().__init__(f"unknown segment tag {tag!r}; known tags: {listed}")
        self.tag = tag
        self.known = sorted(known)


class UnknownAlgorithm(NotFound):
    """An algorithm name that nebula-id does not serve."""


class RateLimited(NebulaIdError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- 503: the fail-closed family --------------------------------------------------


class Unavailable(NebulaIdError):
    """The service cannot prove an ID would be safe, so it issues none.

    `reason` is one of the public 503 reasons of DESIGN.md.
    """

    code = "unavailable"
    http_status = 503
    reason = "not_ready"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(Unavailable):
    reason = "not_ready"


class LeaseLost(Unavailable):
    """The etcd lease behind the worker ID cannot be proven valid."""

    reason = "lease_lost"


class ClockMovedBackward(Unavailable):
    """The wall clock went back further than the tolerance."""

    reason = "clock_moved_backward"

    def __init__(self, message: str, *, behind_ms: int, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after=retry_after)
        self.behind_ms = behind_ms


class WorkerIdsExhausted(Unavailable):
    """Every worker ID of the datacenter is claimed by a live holder."""

    reason = "worker_ids_exhausted"


class SegmentExhausted(Unavailable):
    """Both segment buffers are empty and no datacenter could refill them."""

    reason = "segments_exhausted"


# --- internal, transient ----------------------------------------------------------


class StorageError(NebulaIdError):
    """A database (PostgreSQL or SQLite) call failed; usually transient."""

    code = "unavailable"
    http_status = 503


class CoordinationError(NebulaIdError):
    """An etcd call failed; usually transient."""

    code = "unavailable"
    http_status = 503


class DataDirLocked(ConfigError):
    """Another process already serves from this data dir."""
