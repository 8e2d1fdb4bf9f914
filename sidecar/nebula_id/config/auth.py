"""Who may call the sidecar and how often: API keys, rate limit and the audit log."""

from __future__ import annotations

import dataclasses

from nebula_id import errors
from nebula_id.config import loader


@dataclasses.dataclass(frozen=True, slots=True)
class AuthSettings:
    """The ID API's guards; each is installed only when set."""

    api_keys: tuple[str, ...] = ()
    """Accepted API keys (no flag: arguments are visible to every user of the machine)."""
    api_keys_file: str | None = None
    """A file of API keys, one a line (# comments), re-read when it changes."""
    rate_limit_rps: float | None = None
    """Requests per second allowed; None: no limit."""
    rate_limit_burst: int | None = None
    """The token bucket's size; None: one second's worth."""
    audit_log: str | None = None
    """Audit log path, or ``-`` for stderr; None: no audit log."""

    def __post_init__(self) -> None:
        if self.rate_limit_rps is not None and self.rate_limit_rps <= 0:
            raise errors.ConfigError(f"rate_limit_rps must be positive, got {self.rate_limit_rps}")
        if self.rate_limit_burst is not None and self.rate_limit_burst < 1:
            raise errors.ConfigError(
                f"rate_limit_burst must be at least 1, got {self.rate_limit_burst}"
            )


API_KEYS = "auth_api_keys"
FIELDS: tuple[loader.Field[object], ...] = (
    loader.Field(
        API_KEYS, loader.comma_list, ("auth.api_keys", "auth.api_key"),
        "comma list of API keys", attr="api_keys", secret=True,
    ),
    loader.Field(
        "auth_api_keys_file", loader.optional_text, ("auth.api_keys_file",),
        "file, one key a line", attr="api_keys_file",
    ),
    loader.Field(
        "rate_limit_rps", loader.number, ("rate_limit.requests_per_second",),
        "requests per second",
    ),
    loader.Field("rate_limit_burst", loader.integer, ("rate_limit.burst",), "bucket size"),
    loader.Field(
        "audit_log", loader.optional_text, ("audit.log",), "audit log path, or - for stderr"
    ),
)  # fmt: skip
