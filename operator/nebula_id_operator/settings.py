"""The operator's settings: one frozen object, built once at start-up.

Read from a flag, then a ``NEBULA_*`` environment variable, then the default
(the same order as the sidecar's settings).  The etcd part reuses the etcd
client's own `EtcdSettings`, so the operator reaches etcd exactly as the
sidecars and `nebula-id pool` do.  The webhook fields are what
`webhook.configure` takes; they are read here so there is one settings object
for the whole process.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nebula_id import errors
from nebula_id.core import keys as pool_keys

if TYPE_CHECKING:  # the etcd client pulls in aiohttp: load it only in `load`
    from nebula_id.etcd import client as etcd_client

ENV_PREFIX = "NEBULA_"


@dataclasses.dataclass(frozen=True, slots=True)
class OperatorSettings:
    """Everything `nebula-id operator` needs; see README.md "Operator"."""

    etcd: etcd_client.EtcdSettings
    """How to reach etcd (endpoints, TLS, user/password)."""
    prefix: str = pool_keys.DEFAULT_PREFIX
    """The etcd key prefix of the whole keyspace."""
    namespaces: tuple[str, ...] = ()
    """Namespaces whose pools this operator reconciles; empty means all namespaces."""
    identity: str = dataclasses.field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}"
    )
    """Who this replica is in the leader election (the pod name in a cluster)."""
    leader_ttl_seconds: int = 5
    """TTL of the leader's etcd lease; a dead leader is replaced after about this long."""
    # Bandit B104 accepted: the kubelet's probes reach the pod IP; this server answers health only.
    probe_host: str = "0.0.0.0"  # nosec B104
    """Address of the /healthz, /readyz and /metrics server."""
    probe_port: int = 8081
    """Port of the /healthz, /readyz and /metrics server (0: do not serve)."""
    resync_seconds: float = 30.0
    """How often a pool that is not Ready is reconciled again (e.g. a Secret appeared)."""
    health_interval_seconds: float | None = None
    """Overrides every pool's `spec.failover.probeIntervalSeconds` (how often each
    datacenter's database is probed and the health published); None: the pool's."""
    workers_interval_seconds: float = 3.0
    """How often the worker claims are folded into status and pod annotations."""
    database_timeout_seconds: float = 5.0
    """Upper bound of one database call (provisioning, health check)."""
    pod_name: str | None = None
    pod_namespace: str | None = None
    etcd_pool_users: bool = False
    """Give each pool its own etcd user, role and Secret (needs etcd's root role)."""
    webhook_enabled: bool = False
    """Serve the sidecar injection webhook (see `nebula_id_operator.webhook`)."""
    # Bandit B104 accepted: the API server calls the webhook through a Service, on the pod IP.
    webhook_host: str = "0.0.0.0"  # nosec B104
    webhook_port: int = 9443

    def __post_init__(self) -> None:
        if not 2 <= self.leader_ttl_seconds <= 60:
            raise errors.ConfigError(
                f"leader_ttl_seconds must be 2..60, got {self.leader_ttl_seconds}"
            )
        if not 0 <= self.probe_port <= 65535:
            raise errors.ConfigError(f"probe_port must be 0..65535, got {self.probe_port}")
        for name in ("resync_seconds", "health_interval_seconds", "workers_interval_seconds"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise errors.ConfigError(f"{name} must be positive")
        if self.database_timeout_seconds <= 0:
            raise errors.ConfigError("database_timeout_seconds must be positive")

    @property
    def leader_key(self) -> str:
        """The etcd key the replicas campaign for."""
        return f"{self.prefix.rstrip('/')}/operator/leader"

    def keys(self, namespace: str, name: str) -> pool_keys.PoolKeys:
        return pool_keys.PoolKeys(namespace=namespace, name=name, prefix=self.prefix)


def _text(value: str) -> str:
    return value.strip()


def _float(value: str) -> float:
    return float(value)


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


# name -> parser; each is a flag `--name-with-dashes` and an env `NEBULA_NAME`.
_OPERATOR_FIELDS: dict[str, Callable[[str], Any]] = {
    "etcd_prefix": _text,
    "operator_namespaces": _list,
    "operator_identity": _text,
    "operator_leader_ttl_seconds": int,
    "operator_probe_host": _text,
    "operator_probe_port": int,
    "operator_resync_seconds": _float,
    "operator_health_interval_seconds": _float,
    "operator_workers_interval_seconds": _float,
    "operator_database_timeout_seconds": _float,
    "pod_name": _text,
    "pod_namespace": _text,
    "operator_webhook_enabled": _bool,
    "operator_etcd_pool_users": _bool,
    "operator_webhook_host": _text,
    "operator_webhook_port": int,
}
_ETCD_FIELDS = (
    "etcd_endpoints",
    "etcd_ca_file",
    "etcd_cert_file",
    "etcd_key_file",
    "etcd_username",
    "etcd_password",
)
# setting name -> OperatorSettings field
_RENAMES = {
    "etcd_prefix": "prefix",
    "operator_namespaces": "namespaces",
    "operator_identity": "identity",
    "operator_leader_ttl_seconds": "leader_ttl_seconds",
    "operator_probe_host": "probe_host",
    "operator_probe_port": "probe_port",
    "operator_resync_seconds": "resync_seconds",
    "operator_health_interval_seconds": "health_interval_seconds",
    "operator_workers_interval_seconds": "workers_interval_seconds",
    "operator_database_timeout_seconds": "database_timeout_seconds",
    "pod_name": "pod_name",
    "pod_namespace": "pod_namespace",
    "operator_webhook_enabled": "webhook_enabled",
    "operator_etcd_pool_users": "etcd_pool_users",
    "operator_webhook_host": "webhook_host",
    "operator_webhook_port": "webhook_port",
}


def _flag(name: str) -> str:
    return "--" + name.removeprefix("operator_").replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; all default to None ("not given")."""
    for name in (*_ETCD_FIELDS, *_OPERATOR_FIELDS):
        parser.add_argument(
            _flag(name), dest=name, default=None, help=f"(env {ENV_PREFIX}{name.upper()})"
        )


def load(
    flags: Mapping[str, Any] | argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
) -> OperatorSettings:
    """Build the settings: flags > ``NEBULA_*`` env > defaults."""
    from nebula_id.etcd import client as etcd_client

    given = dict(vars(flags) if isinstance(flags, argparse.Namespace) else (flags or {}))
    environ = os.environ if env is None else env

    def raw(name: str) -> tuple[str, str] | None:
        if given.get(name) is not None:
            return str(given[name]), _flag(name)
        env_name = ENV_PREFIX + name.upper()
        if environ.get(env_name) is not None:
            return environ[env_name], env_name
        return None

    values: dict[str, Any] = {}
    for name, parse in _OPERATOR_FIELDS.items():
        found = raw(name)
        if found is None:
            continue
        text, source = found
        try:
            values[_RENAMES[name]] = parse(text)
        except ValueError as e:
            raise errors.ConfigError(f"{source}: {e}") from e
    if "identity" not in values and "pod_name" in values:
        values["identity"] = values["pod_name"]

    etcd_values = {name: raw(name) for name in _ETCD_FIELDS}
    endpoints = etcd_client.parse_endpoints(
        etcd_values["etcd_endpoints"][0] if etcd_values["etcd_endpoints"] else None
    )
    if not endpoints:
        raise errors.ConfigError(
            "the operator needs etcd: give --etcd-endpoints or NEBULA_ETCD_ENDPOINTS"
        )

    def optional(name: str) -> str | None:
        found = etcd_values[name]
        return found[0] if found and found[0] else None

    etcd = etcd_client.EtcdSettings(
        endpoints=endpoints,
        ca_file=optional("etcd_ca_file"),
        cert_file=optional("etcd_cert_file"),
        key_file=optional("etcd_key_file"),
        username=optional("etcd_username"),
        password=optional("etcd_password"),
    )
    return OperatorSettings(etcd=etcd, **values)
