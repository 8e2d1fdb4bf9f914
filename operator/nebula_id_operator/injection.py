"""The sidecar that the webhook injects, built from a pool and the operator's settings.

Pure: no kopf, no API calls.  The webhook reads the pool and the pod and hands
them here; this module decides what the pod gets and returns it as RFC 6902
JSON-patch operations.  A pod that already has the sidecar gets no operations,
so injection is idempotent.

The sidecar is a *native* sidecar (an init container with ``restartPolicy:
Always``, Kubernetes >= 1.29): the kubelet starts it before the application's
containers, so the app can ask for IDs from its first line, and stops it after
them, so the app can still ask while it shuts down.  It serves the ID API on
loopback only (and on a Unix socket in an ``emptyDir`` that every app container
mounts at `SOCKET_DIR`, its path in ``$NEBULA_UNIX_SOCKET``), so no other pod
can call it; the kubelet's probes reach the pod IP, so health alone is served
there, on `PROBE_PORT` (the container port named `PORT_NAME`).
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
from collections.abc import Mapping, MutableMapping, Sequence
from typing import TypedDict

from nebula_id import errors
from nebula_id.config import injection as injection_config
from nebula_id.core import access, crd, jsontypes
from nebula_id.core import pool as pools
from nebula_id.core.jsontypes import JsonObject, JsonValue

CONTAINER_NAME = "nebula-id"
PORT_NAME = "nebula-id"
PROBE_PORT = injection_config.PROBE_PORT
"""The sidecar's health-only port on the pod IP (``/healthz``, ``/readyz``)."""
DEFAULT_IMAGE = injection_config.DEFAULT_IMAGE
DEFAULT_RESOURCES = injection_config.DEFAULT_RESOURCES
InjectionSettings = injection_config.InjectionSettings
RUN_AS_USER = 65532  # the `nonroot` user of the sidecar image (Dockerfile.sidecar)

DATA_VOLUME = "nebula-id-data"
DATA_DIR = "/var/lib/nebula-id"
DATABASES_VOLUME = "nebula-id-databases"
DATABASES_DIR = "/etc/nebula-id/databases"
ETCD_TLS_VOLUME = "nebula-id-etcd-tls"
ETCD_TLS_DIR = "/etc/nebula-id/etcd-tls"
AUTH_VOLUME = "nebula-id-api-keys"
AUTH_DIR = "/etc/nebula-id/api-keys"
AUTH_FILE = "keys"
SOCKET_VOLUME = "nebula-id-socket"
SOCKET_DIR = "/var/run/nebula-id"
SOCKET_PATH = f"{SOCKET_DIR}/nebula-id.sock"
"""The sidecar's Unix socket, in an emptyDir mounted at the same path in every app container."""
SOCKET_ENV = "NEBULA_UNIX_SOCKET"
# Secret files are owned by root (or by the pod's fsGroup, which is the app's to
# choose), so the sidecar, running as 65532 without fsGroup, can read them only
# through the "other" bits.  The volumes are mounted into the sidecar alone, so
# no other container of the pod sees them.
SECRET_FILE_MODE = 0o444


class PatchOperation(TypedDict):
    """One RFC 6902 operation; only ``add`` is produced here."""

    op: str
    path: str
    value: JsonValue


JsonPatch = list[PatchOperation]


@dataclasses.dataclass(frozen=True, slots=True)
class Sidecar:
    """The init container and the volumes a pod gets."""

    container: Mapping[str, JsonValue]
    volumes: tuple[Mapping[str, JsonValue], ...]
    app_mounts: tuple[Mapping[str, JsonValue], ...] = ()
    """Mounted in every app container: the socket's directory."""
    app_env: tuple[Mapping[str, JsonValue], ...] = ()
    """Set in every app container that does not set it itself."""


class PodRejected(errors.InvalidArgument):
    """The pod asks for injection but cannot get it; the message says why."""


# --- reading the pod ----------------------------------------------------------------


def _spec(pod: Mapping[str, object]) -> Mapping[str, object]:
    return jsontypes.as_object(pod.get("spec")) or {}


def _metadata(pod: Mapping[str, object], field: str) -> Mapping[str, object]:
    """`metadata.labels` or `metadata.annotations` of the pod (empty when absent)."""
    metadata = jsontypes.as_object(pod.get("metadata")) or {}
    return jsontypes.as_object(metadata.get(field)) or {}


def has_sidecar(pod: Mapping[str, object]) -> bool:
    """True when the pod already runs a container named like ours."""
    spec = _spec(pod)
    containers = jsontypes.as_objects(spec.get("initContainers")) + jsontypes.as_objects(
        spec.get("containers")
    )
    return any(c.get("name") == CONTAINER_NAME for c in containers)


def wants_sidecar(pod: Mapping[str, object]) -> bool:
    return _metadata(pod, "labels").get(crd.INJECT_LABEL) == "true"


def pool_name(pod: Mapping[str, object]) -> str:
    """The pool the pod names, or `PodRejected` with a message the user can act on."""
    annotations = _metadata(pod, "annotations")
    name = annotations.get(crd.POOL_ANNOTATION)
    if not isinstance(name, str) or not name.strip():
        raise PodRejected(
            f"the pod is labelled {crd.INJECT_LABEL}=true but has no {crd.POOL_ANNOTATION} "
            "annotation; "
            f"add `{crd.POOL_ANNOTATION}: <NebulaIdPool name>` to the pod template"
        )
    name = name.strip()
    if not pools.DNS_LABEL.match(name):
        raise PodRejected(f"{crd.POOL_ANNOTATION}={name!r} is not a valid NebulaIdPool name")
    return name


# --- building the sidecar --------------------------------------------------------------


def build(pool: pools.PoolConfig, settings: InjectionSettings) -> Sidecar:
    """The sidecar for pods of `pool` (whose namespace is the pod's)."""
    try:
        own_dc = pool.datacenter(settings.datacenter)
    except errors.ConfigError as e:
        raise PodRejected(
            f"the operator runs in datacenter {settings.datacenter!r}, which pool {pool.ref} "
            f"does not list ({', '.join(dc.name for dc in pool.datacenters)})"
        ) from e
    sidecar = pool.sidecar
    probe_port = settings.probe_port + (1 if settings.probe_port == sidecar.port else 0)
    env: list[JsonObject] = [
        _value("NEBULA_HOST", settings.listen_host),
        _value("NEBULA_PORT", str(sidecar.port)),
        _value("NEBULA_PROBE_PORT", str(probe_port)),
        _value("NEBULA_POOL", pool.ref),
        _value("NEBULA_DATACENTER", own_dc.name),
        _value("NEBULA_DATA_DIR", DATA_DIR),
        _value(SOCKET_ENV, SOCKET_PATH),
        _value("NEBULA_LOG_LEVEL", settings.log_level),
        _field("NEBULA_POD_NAME", "metadata.name"),
        _field("NEBULA_POD_NAMESPACE", "metadata.namespace"),
        _field("NEBULA_POD_UID", "metadata.uid"),
        _field("NEBULA_NODE_NAME", "spec.nodeName"),
    ]
    if settings.log_format != "text":
        env.append(_value("NEBULA_LOG_FORMAT", settings.log_format))
    if settings.probe_metrics:
        env.append(_value("NEBULA_PROBE_METRICS", "true"))
    mounts: list[JsonObject] = [
        {"name": DATA_VOLUME, "mountPath": DATA_DIR},
        {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR},
    ]
    volumes: list[JsonObject] = [
        {"name": DATA_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]

    if settings.etcd_endpoints:
        env.append(_value("NEBULA_ETCD_ENDPOINTS", ",".join(settings.etcd_endpoints)))
        env.append(_value("NEBULA_ETCD_PREFIX", settings.etcd_prefix))
    if settings.etcd_tls_secret:
        env += [
            _value("NEBULA_ETCD_CA_FILE", f"{ETCD_TLS_DIR}/ca.crt"),
            _value("NEBULA_ETCD_CERT_FILE", f"{ETCD_TLS_DIR}/tls.crt"),
            _value("NEBULA_ETCD_KEY_FILE", f"{ETCD_TLS_DIR}/tls.key"),
        ]
        mounts.append({"name": ETCD_TLS_VOLUME, "mountPath": ETCD_TLS_DIR, "readOnly": True})
        volumes.append(
            {
                "name": ETCD_TLS_VOLUME,
                "secret": {
                    "secretName": settings.etcd_tls_secret,
                    "defaultMode": SECRET_FILE_MODE,
                },
            }
        )
    if settings.etcd_pool_users:
        secret = access.secret_name(pool.name)
        env += [
            _secret("NEBULA_ETCD_USERNAME", secret, access.SECRET_USERNAME_KEY),
            _secret("NEBULA_ETCD_PASSWORD", secret, access.SECRET_PASSWORD_KEY),
        ]
    elif settings.etcd_auth_secret:
        env += [
            _secret("NEBULA_ETCD_USERNAME", settings.etcd_auth_secret, "username"),
            _secret("NEBULA_ETCD_PASSWORD", settings.etcd_auth_secret, "password"),
        ]

    if own_dc.database_secret_ref is not None:
        ref = own_dc.database_secret_ref
        env.append(_secret("NEBULA_DATABASE_URL", ref.name, ref.key))
    sources: list[JsonObject] = [
        {
            "secret": {
                "name": dc.database_secret_ref.name,
                "items": [{"key": dc.database_secret_ref.key, "path": dc.name}],
                # A missing Secret of another datacenter must not keep the pod from
                # starting: it only costs failover to that datacenter.
                "optional": dc.name != own_dc.name,
            }
        }
        for dc in pool.datacenters
        if dc.database_secret_ref is not None
    ]
    if sources:
        env.append(_value("NEBULA_DATABASE_URL_DIR", DATABASES_DIR))
        mounts.append({"name": DATABASES_VOLUME, "mountPath": DATABASES_DIR, "readOnly": True})
        volumes.append(
            {
                "name": DATABASES_VOLUME,
                "projected": {"sources": sources, "defaultMode": SECRET_FILE_MODE},
            }
        )

    if sidecar.auth_secret_ref is not None:
        # A file, not an environment variable: the kubelet updates a mounted Secret in
        # place, and the sidecar reloads the keys from it, so rotation needs no restart.
        ref = sidecar.auth_secret_ref
        env.append(_value("NEBULA_AUTH_API_KEYS_FILE", f"{AUTH_DIR}/{AUTH_FILE}"))
        mounts.append({"name": AUTH_VOLUME, "mountPath": AUTH_DIR, "readOnly": True})
        volumes.append(
            {
                "name": AUTH_VOLUME,
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": ref.key, "path": AUTH_FILE}],
                    "defaultMode": SECRET_FILE_MODE,
                },
            }
        )
    if sidecar.rate_limit is not None:
        # The sidecar builds its app before it reads the pool from etcd, so the
        # pool's rate limit reaches it as settings.
        env += [
            _value("NEBULA_RATE_LIMIT_RPS", f"{sidecar.rate_limit.requests_per_second:g}"),
            _value("NEBULA_RATE_LIMIT_BURST", str(sidecar.rate_limit.burst)),
        ]

    container: JsonObject = {
        "name": CONTAINER_NAME,
        "image": image_of(pool, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["nebula-id", "serve"],
        "restartPolicy": "Always",
        # Only the probe port: the ID API listens on loopback, unreachable from outside.
        "ports": [{"name": PORT_NAME, "containerPort": probe_port, "protocol": "TCP"}],
        "env": env,
        "volumeMounts": mounts,
        "resources": copy.deepcopy(dict(sidecar.resources or settings.resources)),
        "startupProbe": _probe("/healthz", period=1, failures=30),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        "readinessProbe": _probe("/readyz", period=2, failures=2),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return Sidecar(
        container=container,
        volumes=tuple(volumes),
        app_mounts=({"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR},),
        app_env=(_value(SOCKET_ENV, SOCKET_PATH),),
    )


def image_of(pool: pools.PoolConfig, settings: InjectionSettings) -> str:
    """The sidecar image: the operator's, or the pool's own when the allowlist admits it.

    A pool is written by whoever may edit pools in its namespace; the image runs
    next to every app of the pool with its database credential, so only images
    the cluster's operator admits are used.
    """
    wanted = pool.sidecar.image
    if not wanted or wanted == settings.image:
        return settings.image
    if any(fnmatch.fnmatchcase(wanted, pattern) for pattern in settings.image_allowlist):
        return wanted
    allowed = ", ".join(settings.image_allowlist) or "none: only the operator's default image"
    raise PodRejected(
        f"pool {pool.ref} asks for sidecar image {wanted!r}, which the operator's image "
        f"allowlist does not admit (allowed: {allowed}); remove spec.sidecar.image or ask "
        "the cluster's administrator to add it (Helm value sidecar.imageAllowlist)"
    )


def _value(name: str, value: str) -> JsonObject:
    return {"name": name, "value": value}


def _field(name: str, path: str) -> JsonObject:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _secret(name: str, secret: str, key: str) -> JsonObject:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _probe(path: str, *, period: int, failures: int) -> JsonObject:
    return {
        "httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 1,
        "failureThreshold": failures,
    }


# --- the patch -------------------------------------------------------------------------


def json_patch(pod: Mapping[str, object], sidecar: Sidecar) -> JsonPatch:
    """RFC 6902 operations that add `sidecar` to `pod`; none if it has one already.

    The sidecar goes first among the init containers, so that init containers of
    the app can ask for IDs too.  Volumes whose names are already taken are an
    error rather than silently shadowed.
    """
    if has_sidecar(pod):
        return []
    spec = _spec(pod)
    taken = {v.get("name") for v in jsontypes.as_objects(spec.get("volumes"))}
    clash = sorted(str(v["name"]) for v in sidecar.volumes if v["name"] in taken)
    if clash:
        raise PodRejected(f"the pod already has volumes named {', '.join(clash)}")
    ops: JsonPatch = []
    container = copy.deepcopy(dict(sidecar.container))
    if spec.get("initContainers"):
        ops.append({"op": "add", "path": "/spec/initContainers/0", "value": container})
    else:
        ops.append({"op": "add", "path": "/spec/initContainers", "value": [container]})
    volumes = [copy.deepcopy(dict(v)) for v in sidecar.volumes]
    if spec.get("volumes"):
        ops += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes]
    else:
        ops.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    for index, app in enumerate(jsontypes.as_list(spec.get("containers")) or ()):
        if isinstance(app, Mapping):
            ops += _app_container_ops(f"/spec/containers/{index}", app, sidecar)
    return ops


def _app_container_ops(path: str, app: Mapping[str, object], sidecar: Sidecar) -> JsonPatch:
    """Mount the socket's directory in one app container and tell it the path.

    A mount path or an environment variable the container already has is left
    as the user wrote it.
    """
    ops: JsonPatch = []
    taken_paths = {m.get("mountPath") for m in jsontypes.as_objects(app.get("volumeMounts"))}
    mounts = [
        copy.deepcopy(dict(m)) for m in sidecar.app_mounts if m["mountPath"] not in taken_paths
    ]
    if mounts and app.get("volumeMounts"):
        ops += [{"op": "add", "path": f"{path}/volumeMounts/-", "value": m} for m in mounts]
    elif mounts:
        ops.append({"op": "add", "path": f"{path}/volumeMounts", "value": mounts})
    taken_env = {e.get("name") for e in jsontypes.as_objects(app.get("env"))}
    env = [copy.deepcopy(dict(e)) for e in sidecar.app_env if e["name"] not in taken_env]
    if env and app.get("env"):
        ops += [{"op": "add", "path": f"{path}/env/-", "value": e} for e in env]
    elif env:
        ops.append({"op": "add", "path": f"{path}/env", "value": env})
    return ops


def apply(pod: MutableMapping[str, object], ops: Sequence[PatchOperation]) -> None:
    """Apply the `add` operations of `json_patch` to `pod` in place."""
    for op in ops:
        if op["op"] != "add":
            raise ValueError(f"only 'add' operations are produced here, got {op['op']!r}")
        *parents, last = [p for p in op["path"].split("/") if p]
        target: object = pod
        for part in parents:
            if isinstance(target, MutableMapping):
                target = target.setdefault(part, {})
            elif isinstance(target, list):
                target = target[int(part)]
            else:
                raise ValueError(f"{op['path']!r} goes through {part!r}, which holds a value")
        value = copy.deepcopy(op["value"])
        if isinstance(target, list):
            if last == "-":
                target.append(value)
            else:
                target.insert(int(last), value)
        elif isinstance(target, MutableMapping):
            target[last] = value
        else:
            raise ValueError(f"{op['path']!r} ends inside a value")


def inject(
    pod: Mapping[str, object], pool: pools.PoolConfig, settings: InjectionSettings
) -> JsonPatch:
    """The whole decision for one pod: the patch that gives it the sidecar, or none."""
    if not wants_sidecar(pod) or has_sidecar(pod):
        return []
    return json_patch(pod, build(pool, settings))
