"""What the operator's webhook gives every injected sidecar (``NEBULA_SIDECAR_*``).

The sidecars reach etcd like the operator unless ``NEBULA_SIDECAR_ETCD_*`` say
otherwise, and run in the operator's datacenter (``NEBULA_DATACENTER``) unless
``NEBULA_SIDECAR_DATACENTER`` names another.  A blank value means "not given".
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from typing import cast

from nebula_id import errors
from nebula_id.config import etcd as etcd_mod
from nebula_id.config import loader
from nebula_id.config import log as log_mod
from nebula_id.core import keys as pool_keys
from nebula_id.core.jsontypes import JsonValue

DEFAULT_IMAGE = "ghcr.io/nebula-id/nebula-id-sidecar:0.1.0"
DEFAULT_RESOURCES: Mapping[str, JsonValue] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "128Mi"},
}
PROBE_PORT = 9180
"""The sidecar's health-only port on the pod IP (``/healthz``, ``/readyz``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class InjectionSettings:
    """What the operator adds to every sidecar on top of the pool's `spec.sidecar`."""

    image: str = DEFAULT_IMAGE
    """The sidecar image when the pool does not name one."""
    image_allowlist: tuple[str, ...] = ()
    """Patterns (`fnmatch`, e.g. ``registry.example/nebula-id-sidecar:*``) a pool's
    `spec.sidecar.image` must match to be used; empty: no pool may choose its image."""
    image_pull_policy: str = "IfNotPresent"
    """The container's imagePullPolicy."""
    etcd_endpoints: tuple[str, ...] = ()
    """The etcd endpoints the sidecars reach (may differ from the operator's own view)."""
    etcd_prefix: str = pool_keys.DEFAULT_PREFIX
    """The etcd key prefix the sidecars use."""
    etcd_tls_secret: str | None = None
    """A Secret in the pod's namespace with `ca.crt`, `tls.crt` and `tls.key`."""
    etcd_auth_secret: str | None = None
    """A Secret in the pod's namespace with `username` and `password`."""
    etcd_pool_users: bool = False
    """Log in with the pool's own etcd user (Secret ``nebula-id-etcd-{pool}``, written by
    the operator) instead of `etcd_auth_secret`."""
    datacenter: str | None = None
    """The datacenter this cluster runs in; None means the pool's first one."""
    resources: Mapping[str, JsonValue] = dataclasses.field(
        default_factory=lambda: copy.deepcopy(dict(DEFAULT_RESOURCES))
    )
    """Resources when the pool's `spec.sidecar.resources` is empty."""
    listen_host: str = "127.0.0.1"
    """Where the sidecar serves the ID API: loopback, so only its own pod can call it."""
    probe_port: int = PROBE_PORT
    """The health-only port on the pod IP, for the kubelet's probes."""
    probe_metrics: bool = False
    """Serve /metrics on the probe port too (for a PodMonitor)."""
    log_level: str = "info"
    """The sidecar's log level."""
    log_format: str = "text"
    """The sidecar's log format: text, or json lines."""


def _json(value: object) -> Mapping[str, JsonValue]:
    """A JSON object: given as one (TOML table), or as JSON text (env var)."""
    if isinstance(value, Mapping):
        # A TOML table holds TOML values, which the container spec takes as JSON.
        return cast(Mapping[str, JsonValue], value)
    try:
        parsed: object = json.loads(loader.text(value))
    except json.JSONDecodeError as e:
        raise ValueError(f"must be JSON: {e}") from e
    if not isinstance(parsed, Mapping):
        raise ValueError("must be a JSON object")
    return cast(Mapping[str, JsonValue], parsed)


def _field(
    name: str, parse: loader.Parser[object], help: str, attr: str | None = None
) -> loader.Field[object]:
    return loader.Field(
        f"sidecar_{name}", loader.blank_is_unset(parse), (), help, attr=attr or name
    )


_text = loader.stripped
FIELDS: tuple[loader.Field[object], ...] = (
    _field("image", _text, "the sidecar image"),
    _field("image_pull_policy", _text, "its imagePullPolicy"),
    _field("image_allowlist", loader.comma_list, "images a pool may choose"),
    _field("etcd_endpoints", etcd_mod.ENDPOINTS.parse, "etcd as the sidecars reach it"),
    _field("etcd_prefix", _text, "the sidecars' etcd key prefix"),
    _field("etcd_tls_secret", _text, "Secret with the etcd CA and client certificate"),
    _field("etcd_auth_secret", _text, "Secret with the etcd user and password"),
    _field("datacenter", _text, "the sidecars' datacenter"),
    _field("resources", _json, "default container resources (JSON)"),
    _field("listen_host", _text, "address of the sidecars' ID API"),
    _field("probe_port", loader.integer, "the sidecars' probe port"),
    _field("probe_metrics", loader.boolean, "serve /metrics on the probe port"),
    _field("log_level", loader.choice(log_mod.LEVELS), "the sidecars' log level"),
    _field("log_format", _text, "the sidecars' log format"),
)
"""Environment only (the Helm chart's), no flags."""

DATACENTER = loader.Field("datacenter", loader.blank_is_unset(_text), (), "this datacenter")
"""The process's own datacenter (``NEBULA_DATACENTER``): the sidecars' by default."""


def load(
    sources: loader.Sources,
    *,
    etcd: etcd_mod.EtcdSettings | None = None,
    etcd_pool_users: bool = False,
) -> InjectionSettings:
    """The sidecars' settings; etcd endpoints and prefix default to `etcd` (the operator's)."""
    values = sources.values(FIELDS)
    if etcd is not None:
        values.setdefault("etcd_endpoints", etcd.endpoints)
        values.setdefault("etcd_prefix", etcd.prefix)
    datacenter = sources.value(DATACENTER)
    if datacenter is not None:
        values.setdefault("datacenter", datacenter)
    try:
        return InjectionSettings(etcd_pool_users=etcd_pool_users, **values)
    except errors.InvalidArgument as e:
        raise errors.ConfigError(f"sidecar settings: {e.message}") from e
