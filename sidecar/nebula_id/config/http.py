"""Where and how the sidecar serves: the ID API, the probe server, gRPC and TLS."""

from __future__ import annotations

import dataclasses

from nebula_id import errors
from nebula_id.config import loader
from nebula_id.core import pool as pools


@dataclasses.dataclass(frozen=True, slots=True)
class HttpSettings:
    """The sidecar's listeners."""

    host: str = "127.0.0.1"
    """Address of the ID API: loopback, so only the own pod can call it."""
    port: int = pools.DEFAULT_PORT
    """Port of the ID API."""
    unix_socket: str | None = None
    """Also serve HTTP on this Unix socket."""
    grpc_port: int | None = None
    """Serve gRPC on this port too, on `host` (0: any free port); None: no gRPC."""
    # Bandit B104 accepted: health only; the ID API stays on `host`
    probe_host: str = "0.0.0.0"  # nosec B104
    """Address of the health-only probe server (the kubelet reaches the pod IP)."""
    probe_port: int | None = None
    """Serve /healthz and /readyz alone on this port; None: no probe server."""
    probe_metrics: bool = False
    """Serve /metrics on the probe port too."""
    tls_cert_file: str | None = None
    """Serve HTTPS (and gRPC over TLS) with this certificate; comes with `tls_key_file`."""
    tls_key_file: str | None = None
    """The serving certificate's key."""
    max_batch_size: int = pools.DEFAULT_MAX_BATCH
    """The largest ``?count=`` in standalone mode (a pool's ``spec.sidecar`` in a cluster)."""

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise errors.ConfigError(f"port must be 1..65535, got {self.port}")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise errors.ConfigError(
                f"grpc_port must be 0..65535 (0: any free port), got {self.grpc_port}"
            )
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise errors.ConfigError(f"grpc_port and port must differ, both are {self.port}")
        if self.probe_port is not None:
            if not 1 <= self.probe_port <= 65535:
                raise errors.ConfigError(f"probe_port must be 1..65535, got {self.probe_port}")
            if self.probe_port in (self.port, self.grpc_port):
                raise errors.ConfigError("probe_port must differ from port and grpc_port")
        if not 1 <= self.max_batch_size <= 100_000:
            raise errors.ConfigError(f"max_batch_size must be 1..100000, got {self.max_batch_size}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise errors.ConfigError("tls_cert_file and tls_key_file must be given together")


FIELDS: tuple[loader.Field[object], ...] = (
    loader.Field("host", loader.text, ("app.host",), "address to listen on"),
    loader.Field("port", loader.integer, ("app.port",), "port to listen on"),
    loader.Field(
        "unix_socket", loader.optional_text, ("app.unix_socket",), "also serve HTTP on this socket"
    ),
    loader.Field(
        "grpc_port", loader.integer, ("grpc.port",), "serve gRPC on this port too (host as --host)"
    ),
    loader.Field(
        "probe_host", loader.text, ("probe.host",), "address of the health-only probe server"
    ),
    loader.Field(
        "probe_port", loader.integer, ("probe.port",),
        "serve /healthz and /readyz alone on this port",
    ),
    loader.Field(
        "probe_metrics", loader.boolean, ("probe.metrics",), "serve /metrics on the probe port too"
    ),
    loader.Field(
        "tls_cert_file", loader.optional_text, ("tls.cert_file",), "serve HTTPS with this cert"
    ),
    loader.Field("tls_key_file", loader.optional_text, ("tls.key_file",), "and this key"),
    loader.Field("max_batch_size", loader.integer, ("app.max_batch_size",), "largest ?count="),
)  # fmt: skip
