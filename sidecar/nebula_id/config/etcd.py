"""How a process reaches etcd: one settings class and one endpoint parser for all.

The sidecar, the operator and `nebula-id pool` read the same ``NEBULA_ETCD_*``
settings through `FIELDS` and dial the URLs of `EtcdSettings.urls`, so the same
settings reach the same etcd the same way in every process.

An endpoint is ``http://host:port``, ``https://host:port`` or a bare
``host:port``.  A bare endpoint is dialled over https when TLS material is
configured (a CA file or a client certificate), and over plain http otherwise:
giving a CA file says the server speaks TLS.  An explicit scheme always wins.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Sequence

from nebula_id import errors
from nebula_id.config import loader
from nebula_id.core import keys as pool_keys

DEFAULT_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 2.0
SCHEMES = ("http", "https")


def parse_endpoints(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """A comma list (or sequence) of endpoints: blanks dropped, trailing ``/`` removed.

    A bare ``host:port`` stays bare: its scheme is decided by `EtcdSettings.urls`,
    which knows whether TLS is configured.
    """
    if value is None:
        return ()
    result = []
    for endpoint in loader.comma_list(value):
        scheme, sep, _ = endpoint.partition("://")
        if sep and scheme not in SCHEMES:
            raise ValueError(f"endpoint {endpoint!r} must be http://, https:// or host:port")
        result.append(endpoint.rstrip("/"))
    return tuple(result)


def endpoint_url(endpoint: str, *, tls: bool) -> str:
    """The URL dialled for one endpoint (see the module docstring)."""
    if "://" in endpoint:
        return endpoint.rstrip("/")
    return f"{'https' if tls else 'http'}://{endpoint.rstrip('/')}"


@dataclasses.dataclass(frozen=True, slots=True)
class EtcdSettings:
    """How to reach etcd, and where this deployment's keys live."""

    endpoints: tuple[str, ...]
    """`http(s)://host:port` URLs, or bare `host:port` (https when TLS is configured)."""
    prefix: str = pool_keys.DEFAULT_PREFIX
    """The key prefix of the whole keyspace."""
    username: str | None = None
    """etcd user; comes with `password`."""
    password: str | None = None
    """etcd password (no flag in the sidecar: arguments are visible to every user)."""
    ca_file: str | None = None
    """PEM bundle to verify the server with; enables TLS for bare endpoints."""
    cert_file: str | None = None
    """Client certificate (PEM) for etcd's `--client-cert-auth`; comes with `key_file`."""
    key_file: str | None = None
    """The client certificate's key."""
    timeout: float = DEFAULT_TIMEOUT
    """Upper bound of one call on one endpoint, in seconds."""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    """Upper bound of opening one connection, in seconds."""

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise errors.ConfigError("etcd needs at least one endpoint")
        try:
            object.__setattr__(self, "endpoints", parse_endpoints(self.endpoints))
        except ValueError as e:
            raise errors.ConfigError(f"etcd_endpoints: {e}") from e
        if (self.cert_file is None) != (self.key_file is None):
            raise errors.ConfigError(
                "etcd_cert_file and etcd_key_file must be given together "
                "(the etcd client certificate and key come together)"
            )
        if (self.username is None) != (self.password is None):
            raise errors.ConfigError(
                "etcd_username and etcd_password must be given together "
                "(the etcd user name and password come together)"
            )
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise errors.ConfigError("etcd timeouts must be positive")

    @property
    def tls(self) -> bool:
        """True when TLS material is configured: bare endpoints are dialled over https."""
        return bool(self.ca_file or self.cert_file)

    @property
    def urls(self) -> tuple[str, ...]:
        """The URLs the client dials, in order."""
        return tuple(endpoint_url(e, tls=self.tls) for e in self.endpoints)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for https endpoints (None: system defaults or plain HTTP)."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file and self.key_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as e:
            raise errors.ConfigError(f"cannot load the etcd TLS files: {e}") from e
        return context


def _endpoints(value: object) -> tuple[str, ...]:
    return parse_endpoints(value if isinstance(value, list | tuple) else loader.text(value))


ENDPOINTS = loader.Field(
    "etcd_endpoints", _endpoints, ("etcd.endpoints",), "comma list of etcd URLs", attr="endpoints"
)
PREFIX = loader.Field(
    "etcd_prefix", loader.text, ("etcd.prefix",), "etcd key prefix", attr="prefix"
)
FIELDS: tuple[loader.Field[object], ...] = (
    ENDPOINTS,
    PREFIX,
    loader.Field(
        "etcd_ca_file", loader.optional_text, ("etcd.ca_file",), "CA bundle for etcd TLS",
        attr="ca_file",
    ),
    loader.Field(
        "etcd_cert_file", loader.optional_text, ("etcd.cert_file",),
        "client certificate for etcd", attr="cert_file",
    ),
    loader.Field(
        "etcd_key_file", loader.optional_text, ("etcd.key_file",), "client key for etcd",
        attr="key_file",
    ),
    loader.Field(
        "etcd_username", loader.optional_text, ("etcd.username",), "etcd user", attr="username"
    ),
    loader.Field(
        "etcd_password", loader.optional_text, ("etcd.password",), "etcd password",
        attr="password", secret=True,
    ),
)  # fmt: skip
PASSWORD = "etcd_password"  # nosec B105: the field's name, not a password


def load(sources: loader.Sources, *, required_by: str | None = None) -> EtcdSettings | None:
    """The etcd settings the sources give; None when they name no endpoint.

    `required_by` names the process that cannot run without etcd: it then fails
    with a message that says how to give the endpoints.
    """
    values = sources.values(FIELDS)
    if not values.get("endpoints"):
        if required_by is not None:
            raise errors.ConfigError(
                f"{required_by} needs etcd: give --etcd-endpoints or NEBULA_ETCD_ENDPOINTS"
            )
        return None
    return EtcdSettings(**values)
