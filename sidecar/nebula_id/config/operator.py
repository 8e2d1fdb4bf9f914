"""`nebula-id operator`: the operator's settings, composed of one object per concern.

Read by the one loader, from a flag, then a ``NEBULA_*`` environment variable,
then the default (the operator has no config file).  The etcd concern is the
sidecar's (`config.etcd`), so the operator reaches etcd exactly as the sidecars
and `nebula-id pool` do.  The webhook and the sidecars it injects are loaded
here too, once, so the process has one settings object.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from collections.abc import Mapping

from nebula_id import errors
from nebula_id.config import etcd as etcd_mod
from nebula_id.config import injection as injection_mod
from nebula_id.config import loader
from nebula_id.config import log as log_mod
from nebula_id.config import pod as pod_mod
from nebula_id.config import webhook as webhook_mod
from nebula_id.core import keys as pool_keys


def _default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclasses.dataclass(frozen=True, slots=True)
class OperatorSettings:
    """Everything `nebula-id operator` needs; see README.md "Operator"."""

    etcd: etcd_mod.EtcdSettings
    """How to reach etcd (endpoints, TLS, user/password) and the key prefix."""
    namespaces: tuple[str, ...] = ()
    """Namespaces whose pools this operator reconciles; empty means all namespaces."""
    identity: str = dataclasses.field(default_factory=_default_identity)
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
    pod: pod_mod.PodSettings = dataclasses.field(default_factory=pod_mod.PodSettings)
    """The operator's own pod (downward API)."""
    etcd_pool_users: bool = False
    """Give each pool its own etcd user, role and Secret (needs etcd's root role)."""
    webhook_enabled: bool = False
    """Serve the sidecar injection webhook (see `nebula_id_operator.webhook`)."""
    # Bandit B104 accepted: the API server calls the webhook through a Service, on the pod IP.
    webhook_host: str = "0.0.0.0"  # nosec B104
    """Address of the webhook's HTTPS server."""
    webhook_port: int = 9443
    """Port of the webhook's HTTPS server."""
    webhook: webhook_mod.WebhookSettings = dataclasses.field(
        default_factory=webhook_mod.WebhookSettings
    )
    """How the webhook keeps its certificate (``NEBULA_WEBHOOK_*``)."""
    injection: injection_mod.InjectionSettings = dataclasses.field(
        default_factory=injection_mod.InjectionSettings
    )
    """What the injected sidecars get (``NEBULA_SIDECAR_*``)."""
    log: log_mod.LogSettings = dataclasses.field(default_factory=log_mod.LogSettings)
    """The operator's log level and format."""

    def __post_init__(self) -> None:
        if not 2 <= self.leader_ttl_seconds <= 60:
            raise errors.ConfigError(
                f"leader_ttl_seconds must be 2..60, got {self.leader_ttl_seconds}"
            )
        if not 0 <= self.probe_port <= 65535:
            raise errors.ConfigError(f"probe_port must be 0..65535, got {self.probe_port}")
        if not 0 <= self.webhook_port <= 65535:
            raise errors.ConfigError(f"webhook_port must be 0..65535, got {self.webhook_port}")
        for name in ("resync_seconds", "health_interval_seconds", "workers_interval_seconds"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise errors.ConfigError(f"{name} must be positive")
        if self.database_timeout_seconds <= 0:
            raise errors.ConfigError("database_timeout_seconds must be positive")

    @property
    def prefix(self) -> str:
        """The etcd key prefix of the whole keyspace."""
        return self.etcd.prefix

    @property
    def leader_key(self) -> str:
        """The etcd key the replicas campaign for."""
        return f"{self.prefix.rstrip('/')}/operator/leader"

    def keys(self, namespace: str, name: str) -> pool_keys.PoolKeys:
        return pool_keys.PoolKeys(namespace=namespace, name=name, prefix=self.prefix)


def _field(name: str, parse: loader.Parser[object], help: str) -> loader.Field[object]:
    """``operator_<name>``: env ``NEBULA_OPERATOR_<NAME>``, flag ``--<name>``."""
    return loader.Field(f"operator_{name}", parse, (), help, attr=name, flag_name=name)


FIELDS: tuple[loader.Field[object], ...] = (
    _field("namespaces", loader.comma_list, "namespaces to reconcile (default: all)"),
    _field("identity", loader.stripped, "this replica's name in the leader election"),
    _field("leader_ttl_seconds", loader.integer, "TTL of the leader's etcd lease"),
    _field("probe_host", loader.stripped, "address of the probe and metrics server"),
    _field("probe_port", loader.integer, "port of the probe and metrics server (0: none)"),
    _field("resync_seconds", loader.number, "how often a pool that is not Ready is retried"),
    _field("health_interval_seconds", loader.number, "datacenter probe interval (all pools)"),
    _field("workers_interval_seconds", loader.number, "how often worker claims are folded"),
    _field("database_timeout_seconds", loader.number, "upper bound of one database call"),
    _field("webhook_enabled", loader.boolean, "serve the sidecar injection webhook"),
    _field("etcd_pool_users", loader.boolean, "give each pool its own etcd user"),
    _field("webhook_host", loader.stripped, "address of the webhook's HTTPS server"),
    _field("webhook_port", loader.integer, "port of the webhook's HTTPS server"),
)
POD_FIELDS = pod_mod.FIELDS[:2]
"""The pod's name and namespace (the name is the default identity)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; all default to None ("not given")."""
    loader.add_arguments(parser, (*etcd_mod.FIELDS, *FIELDS, *POD_FIELDS, *log_mod.FIELDS))


def load(
    flags: Mapping[str, object] | argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
) -> OperatorSettings:
    """Build the settings: flags > ``NEBULA_*`` env > defaults."""
    found = loader.sources(flags, env)
    etcd = etcd_mod.load(found, required_by="the operator")
    assert etcd is not None  # required_by: missing endpoints raise
    values = found.values(FIELDS)
    pod = found.build(pod_mod.PodSettings, POD_FIELDS)
    if "identity" not in values and pod.name:
        values["identity"] = pod.name
    settings = OperatorSettings(
        etcd=etcd,
        pod=pod,
        log=found.build(log_mod.LogSettings, log_mod.FIELDS),
        **values,
    )
    return dataclasses.replace(
        settings,
        webhook=webhook_mod.load(
            found,
            enabled=settings.webhook_enabled,
            listen_address=settings.webhook_host,
            port=settings.webhook_port,
            pod_namespace=pod.namespace,
        ),
        injection=injection_mod.load(found, etcd=etcd, etcd_pool_users=settings.etcd_pool_users),
    )
