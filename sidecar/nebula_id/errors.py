"""Our own exception hierarchy.

Every failure a user can see is one of these, and each class says what it is:
its public `code`, its `http_status`, and whether it is `transient`.  Every
"try again later" failure is an `Unavailable` (a 503 with a `reason` and a
``Retry-After``), so callers decide from the class alone.  The HTTP layer maps
them to answers in one place (`nebula_id.http.errors`, which the gRPC server
shares), and the operator maps them to kopf errors in one place
(`nebula_id_operator.failures`).  Adapters chain the library error with
``raise ... from e`` so no raw asyncpg or aiohttp exception crosses the API.
"""

from __future__ import annotations

from typing import ClassVar


class NebulaIdError(Exception):
    """Base of every nebula-id error.

    `code` is the public error code of the HTTP API and `http_status` its status.
    """

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    transient: ClassVar[bool] = True
    """Whether the same call, repeated unchanged later, may succeed.

    False only where a change (of a request, a spec, a setting, a Secret) is
    needed.  An error that does not know says True: a retry with backoff costs
    little, giving up on a failure that would have passed costs a stuck pool.
    """

    retry_after: float | None = None
    """Seconds after which the same call may succeed; None when no wait is known.

    Set on every "try again later" answer (`RateLimited`, `Unavailable`): the
    HTTP layer sends it as ``Retry-After`` and the clients pause for it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- 400 -----------------------------------------------------------------------


class InvalidArgument(NebulaIdError):
    """A request or a setting is malformed; the message names the problem."""

    code = "invalid_argument"
    http_status = 400
    transient = False


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
    transient = False


class NotFound(NebulaIdError):
    code = "not_found"
    http_status = 404
    transient = False


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
    """The caller asked too often; `retry_after` says when to ask again.

    Transient, but not `Unavailable`: the service is fine, this caller is over
    its quota (429, not 503).
    """

    code = "rate_limited"
    http_status = 429
    retry_after: float

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- 503: the fail-closed family --------------------------------------------------


class Unavailable(NebulaIdError):
    """Try again later: the service cannot do this now, and issues nothing.

    Either it cannot prove an ID would be safe, or a dependency (a database,
    etcd, the Kubernetes API) failed.  `reason` is one of the public 503
    reasons of DESIGN.md; a dependency's failure answers ``not_ready``.
    """

    code = "unavailable"
    http_status = 503
    transient = True
    reason: ClassVar[str] = "not_ready"
    retry_after: float

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


# --- 503: a dependency failed -----------------------------------------------------


class StorageError(Unavailable):
    """A database (PostgreSQL, MySQL or SQLite) call failed."""


class CoordinationError(Unavailable):
    """An etcd call failed."""


class DataDirLocked(ConfigError):
    """Another process already serves from this data dir."""
