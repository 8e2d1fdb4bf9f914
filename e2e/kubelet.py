"""Play the kubelet's part for one container, honestly, on the test host.

The e2e tier runs without a kubelet (the node tier has one), so the end-to-end
test starts a pod's container as a local process. This module does what the
kubelet would do with the pod spec and nothing more: it resolves `env` (plain
values, the downward API from the Pod object, `secretKeyRef` from real
Secrets), materialises the volumes the container mounts (emptyDir, secret,
projected secret) in a local directory, and rewrites paths under a mount point
to that directory. Only the network namespace is simulated: `host_overrides`
replace settings such as the listen address, because all test processes share
the host's loopback.
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SecretReader = Callable[[str], Mapping[str, str] | None]
"""Secret name (in the pod's namespace) -> its base64 `data`, or None if absent."""


@dataclasses.dataclass(frozen=True)
class LocalContainer:
    argv: list[str]
    env: dict[str, str]
    mounts: dict[str, Path]
    """mountPath in the container -> local directory."""


def _field(pod: Mapping[str, Any], path: str, node_name: str) -> str:
    meta = pod.get("metadata") or {}
    if path == "metadata.name":
        return str(meta["name"])
    if path == "metadata.namespace":
        return str(meta["namespace"])
    if path == "metadata.uid":
        return str(meta["uid"])
    if path == "spec.nodeName":
        return str((pod.get("spec") or {}).get("nodeName") or node_name)
    raise ValueError(f"downward API field {path!r} is not supported by this stand-in")


def _secret_value(secrets: SecretReader, name: str, key: str, *, optional: bool) -> str | None:
    data = secrets(name)
    if data is None or key not in data:
        if optional:
            return None
        raise LookupError(f"Secret {name!r} or its key {key!r} is missing: the pod would not start")
    return base64.b64decode(data[key]).decode()


def _write_items(
    target: Path, secrets: SecretReader, source: Mapping[str, Any], *, name_key: str
) -> None:
    name = str(source[name_key])
    optional = bool(source.get("optional", False))
    data = secrets(name)
    if data is None:
        if optional:
            return
        raise LookupError(f"Secret {name!r} is missing: the pod would not start")
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise LookupError(f"Secret {name!r} has no key {item['key']!r}")
        path = target / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data[item["key"]]))


def _materialise(volume: Mapping[str, Any], target: Path, secrets: SecretReader) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if "emptyDir" in volume:
        return
    if "secret" in volume:
        _write_items(target, secrets, volume["secret"], name_key="secretName")
        return
    if "projected" in volume:
        for source in volume["projected"]["sources"]:
            if "secret" not in source:
                raise ValueError(f"projected source {sorted(source)} is not supported")
            _write_items(target, secrets, source["secret"], name_key="name")
        return
    raise ValueError(f"volume type of {volume['name']!r} is not supported by this stand-in")


def resolve(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    secrets: SecretReader,
    root: Path,
    node_name: str = "e2e-node",
    host_overrides: Mapping[str, str] | None = None,
) -> LocalContainer:
    """The argv, environment and mounts the kubelet would give `container`."""
    volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        local = root / "volumes" / mount["name"]
        if not local.exists():
            _materialise(volumes[mount["name"]], local, secrets)
        mounts[mount["mountPath"]] = local

    env: dict[str, str] = {}
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = str(var["value"])
            continue
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = _field(pod, source["fieldRef"]["fieldPath"], node_name)
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = _secret_value(
                secrets, ref["name"], ref["key"], optional=bool(ref.get("optional", False))
            )
            if value is not None:
                env[name] = value
        else:
            raise ValueError(f"env {name}: {sorted(source)} is not supported by this stand-in")

    for name, value in env.items():
        for mount_path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                env[name] = str(local) + value[len(mount_path.rstrip("/")) :]
                break
    env.update(host_overrides or {})

    argv = [*container.get("command", []), *container.get("args", [])]
    if not argv:
        raise ValueError("the container names no command; the image's entry point is unknown here")
    argv[0] = _local_binary(argv[0])
    return LocalContainer(argv=argv, env=env, mounts=mounts)


def _local_binary(name: str) -> str:
    """The console script from this interpreter's venv (what the image installs)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed next to {sys.executable}")
    return found
