"""The pure sidecar builder: what a labelled pod gets, and that it gets it once."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from tests.support import pools as support_pools

from nebula_id.core import access, crd
from nebula_id.core import pool as pools
from nebula_id_operator import injection

SETTINGS = injection.InjectionSettings(
    image="registry.example/nebula-id-sidecar:1.2.3",
    etcd_endpoints=("https://etcd-0:2379", "https://etcd-1:2379"),
    etcd_prefix="/ids",
    datacenter="dc-b",
)


DATACENTERS = [
    {"name": "dc-a", "id": 1, "databaseSecretRef": {"name": "pg-a"}},
    {"name": "dc-b", "id": 2, "databaseSecretRef": {"name": "pg-b", "key": "url"}},
    {"name": "dc-c", "id": 3},
]


def make_pool(**sidecar: Any) -> pools.PoolConfig:
    """The pool shop/ids, with `sidecar` as its spec.sidecar."""
    return support_pools.make_pool(
        "ids", namespace="shop", algorithm="segment", datacenters=DATACENTERS, sidecar=sidecar
    )


def make_pod(**extra_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-",
            "namespace": "shop",
            "labels": {"app": "web", crd.INJECT_LABEL: "true"},
            "annotations": {crd.POOL_ANNOTATION: "ids"},
        },
        "spec": {"containers": [{"name": "web", "image": "web:1"}], **extra_spec},
    }


def injected(pod: dict[str, Any], pool: pools.PoolConfig | None = None) -> dict[str, Any]:
    result = copy.deepcopy(pod)
    injection.apply(result, injection.inject(pod, pool or make_pool(), SETTINGS))
    return result


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_a_labelled_pod_gets_a_native_sidecar_first_among_init_containers() -> None:
    pod = injected(make_pod(initContainers=[{"name": "migrate", "image": "m:1"}]))
    names = [c["name"] for c in pod["spec"]["initContainers"]]
    assert names == ["nebula-id", "migrate"]
    sidecar = pod["spec"]["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["nebula-id", "serve"]
    assert sidecar["image"] == "registry.example/nebula-id-sidecar:1.2.3"
    # Only the health-only probe port is a container port: the ID API is on loopback.
    assert sidecar["ports"] == [
        {"name": "nebula-id", "containerPort": injection.PROBE_PORT, "protocol": "TCP"}
    ]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["web"]


def test_the_environment_names_pool_datacenter_etcd_and_downward_api() -> None:
    env = env_of(injected(make_pod())["spec"]["initContainers"][0])
    assert env["NEBULA_POOL"] == "shop/ids"
    assert env["NEBULA_DATACENTER"] == "dc-b"
    assert env["NEBULA_HOST"] == "127.0.0.1"
    assert env["NEBULA_PORT"] == "8080"
    assert env["NEBULA_PROBE_PORT"] == str(injection.PROBE_PORT)
    assert "NEBULA_PROBE_METRICS" not in env
    assert env["NEBULA_ETCD_ENDPOINTS"] == "https://etcd-0:2379,https://etcd-1:2379"
    assert env["NEBULA_ETCD_PREFIX"] == "/ids"
    assert env["NEBULA_DATA_DIR"] == injection.DATA_DIR
    field = {
        k: v["fieldRef"]["fieldPath"]
        for k, v in env.items()
        if isinstance(v, dict) and "fieldRef" in v
    }
    assert field == {
        "NEBULA_POD_NAME": "metadata.name",
        "NEBULA_POD_NAMESPACE": "metadata.namespace",
        "NEBULA_POD_UID": "metadata.uid",
        "NEBULA_NODE_NAME": "spec.nodeName",
    }


def test_own_database_from_secret_key_and_all_datacenters_as_files() -> None:
    pod = injected(make_pod())
    sidecar = pod["spec"]["initContainers"][0]
    env = env_of(sidecar)
    assert env["NEBULA_DATABASE_URL"] == {"secretKeyRef": {"name": "pg-b", "key": "url"}}
    assert env["NEBULA_DATABASE_URL_DIR"] == injection.DATABASES_DIR
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    sources = volumes[injection.DATABASES_VOLUME]["projected"]["sources"]
    assert sources == [
        {"secret": {"name": "pg-a", "items": [{"key": "dsn", "path": "dc-a"}], "optional": True}},
        {"secret": {"name": "pg-b", "items": [{"key": "url", "path": "dc-b"}], "optional": False}},
    ]
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert mounts == {
        injection.DATA_VOLUME: injection.DATA_DIR,
        injection.SOCKET_VOLUME: injection.SOCKET_DIR,
        injection.DATABASES_VOLUME: injection.DATABASES_DIR,
    }
    assert "emptyDir" in volumes[injection.DATA_VOLUME]


def readable_by(mode: int, *, uid: int, gid: int, owner: int = 0, group: int | None = None) -> bool:
    """Whether a file of `mode`, owned by `owner`:`group`, is readable by uid:gid."""
    if uid == owner:
        return bool(mode & 0o400)
    if group is not None and gid == group:
        return bool(mode & 0o040)
    return bool(mode & 0o004)


@pytest.mark.parametrize("fs_group", [None, 2000])
def test_mounted_secrets_are_readable_by_the_sidecar_user_whatever_the_pods_fs_group(
    fs_group: int | None,
) -> None:
    # The kubelet writes Secret files as root, group fsGroup if the pod sets one
    # (the app's choice, not ours), with the volume's mode: the sidecar, running
    # as 65532:65532, must still read its DSNs and etcd key.
    settings = dataclasses.replace(SETTINGS, etcd_tls_secret="etcd-tls")
    pod = make_pod(**({"securityContext": {"fsGroup": fs_group}} if fs_group else {}))
    injection.apply(pod, injection.inject(pod, make_pool(), settings))
    sidecar = pod["spec"]["initContainers"][0]
    ctx = sidecar["securityContext"]
    mounted = {m["name"] for m in sidecar["volumeMounts"]}
    secret_volumes = [
        v
        for v in pod["spec"]["volumes"]
        if ("secret" in v or "projected" in v) and v["name"] in mounted
    ]
    assert {v["name"] for v in secret_volumes} == {
        injection.DATABASES_VOLUME,
        injection.ETCD_TLS_VOLUME,
    }
    for volume in secret_volumes:
        mode = (volume.get("secret") or volume.get("projected"))["defaultMode"]
        assert readable_by(mode, uid=ctx["runAsUser"], gid=ctx["runAsGroup"], group=fs_group), (
            volume["name"],
            oct(mode),
        )
    # Only the sidecar mounts them (app containers get the socket's emptyDir only).
    secret_names = {v["name"] for v in secret_volumes}
    for container in pod["spec"]["containers"]:
        assert not {m["name"] for m in container.get("volumeMounts", [])} & secret_names


def test_security_context_meets_the_restricted_pod_security_standard() -> None:
    ctx = injected(make_pod())["spec"]["initContainers"][0]["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] != 0
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}


def test_probes_hit_readyz_and_healthz_on_the_named_port() -> None:
    sidecar = injected(make_pod())["spec"]["initContainers"][0]
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {sidecar[p]["httpGet"]["port"] for p in ("readinessProbe", "livenessProbe")} == {
        "nebula-id"
    }


def test_pool_sidecar_spec_overrides_image_port_resources_and_adds_api_keys() -> None:
    pool = make_pool(
        image="mine:2",
        port=9090,
        resources={"limits": {"cpu": "1", "memory": "256Mi"}},
        authSecretRef={"name": "keys", "key": "api-keys"},
    )
    allowing = dataclasses.replace(SETTINGS, image_allowlist=("mine:*",))
    pod = make_pod()
    injection.apply(pod, injection.inject(pod, pool, allowing))
    sidecar = pod["spec"]["initContainers"][0]
    env = env_of(sidecar)
    assert sidecar["image"] == "mine:2"
    assert sidecar["ports"][0]["containerPort"] == injection.PROBE_PORT
    assert env["NEBULA_PORT"] == "9090"
    clash = injected(make_pod(), make_pool(port=injection.PROBE_PORT))["spec"]["initContainers"][0]
    assert clash["ports"][0]["containerPort"] == injection.PROBE_PORT + 1
    assert env_of(clash)["NEBULA_PROBE_PORT"] == str(injection.PROBE_PORT + 1)
    assert sidecar["resources"] == {"limits": {"cpu": "1", "memory": "256Mi"}}
    # The keys come as a file (reloaded on rotation), never as an environment variable.
    assert "NEBULA_AUTH_API_KEYS" not in env
    assert env["NEBULA_AUTH_API_KEYS_FILE"] == f"{injection.AUTH_DIR}/{injection.AUTH_FILE}"
    pod = make_pod()
    injection.apply(pod, injection.inject(pod, pool, allowing))
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == injection.AUTH_VOLUME]
    assert volume["secret"]["secretName"] == "keys"
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": injection.AUTH_FILE}]
    assert volume["secret"]["defaultMode"] == 0o444


def test_a_pool_image_outside_the_allowlist_is_refused() -> None:
    pool = make_pool(image="evil.example/miner:1")
    with pytest.raises(injection.PodRejected, match=r"evil.example/miner:1.*allowlist"):
        injection.inject(make_pod(), pool, SETTINGS)
    allowing = dataclasses.replace(SETTINGS, image_allowlist=("registry.example/*",))
    with pytest.raises(injection.PodRejected, match=r"allowed: registry.example/\*"):
        injection.inject(make_pod(), pool, allowing)
    # The operator's own image is always fine, named or not.
    same = make_pool(image=SETTINGS.image)
    pod = make_pod()
    injection.apply(pod, injection.inject(pod, same, SETTINGS))
    assert pod["spec"]["initContainers"][0]["image"] == SETTINGS.image


def test_the_pools_rate_limit_reaches_the_sidecar_as_settings() -> None:
    pool = make_pool(rateLimit={"requestsPerSecond": 250, "burst": 50})
    env = env_of(injected(make_pod(), pool)["spec"]["initContainers"][0])
    assert env["NEBULA_RATE_LIMIT_RPS"] == "250"
    assert env["NEBULA_RATE_LIMIT_BURST"] == "50"
    unlimited = env_of(injected(make_pod())["spec"]["initContainers"][0])
    assert "NEBULA_RATE_LIMIT_RPS" not in unlimited


def test_default_resources_when_the_pool_names_none() -> None:
    sidecar = injected(make_pod())["spec"]["initContainers"][0]
    assert sidecar["resources"] == dict(injection.DEFAULT_RESOURCES)


def test_etcd_tls_and_auth_secrets_are_wired_when_configured() -> None:
    settings = injection.InjectionSettings(
        etcd_endpoints=("https://etcd:2379",),
        etcd_tls_secret="etcd-tls",
        etcd_auth_secret="etcd-auth",
    )
    pod = make_pod()
    injection.apply(pod, injection.inject(pod, make_pool(), settings))
    sidecar = pod["spec"]["initContainers"][0]
    env = env_of(sidecar)
    assert env["NEBULA_ETCD_CA_FILE"] == f"{injection.ETCD_TLS_DIR}/ca.crt"
    assert env["NEBULA_ETCD_CERT_FILE"] == f"{injection.ETCD_TLS_DIR}/tls.crt"
    assert env["NEBULA_ETCD_KEY_FILE"] == f"{injection.ETCD_TLS_DIR}/tls.key"
    assert env["NEBULA_ETCD_USERNAME"] == {"secretKeyRef": {"name": "etcd-auth", "key": "username"}}
    assert env["NEBULA_ETCD_PASSWORD"] == {"secretKeyRef": {"name": "etcd-auth", "key": "password"}}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[injection.ETCD_TLS_VOLUME]["secret"]["secretName"] == "etcd-tls"


def test_with_per_pool_etcd_users_the_sidecar_logs_in_as_its_pool() -> None:
    settings = injection.InjectionSettings(
        etcd_endpoints=("https://etcd:2379",), etcd_auth_secret="shared", etcd_pool_users=True
    )
    pod = make_pod()
    injection.apply(pod, injection.inject(pod, make_pool(), settings))
    env = env_of(pod["spec"]["initContainers"][0])
    secret = access.secret_name(make_pool().name)
    assert secret.startswith("nebula-id-etcd-")
    assert env["NEBULA_ETCD_USERNAME"] == {"secretKeyRef": {"name": secret, "key": "username"}}
    assert env["NEBULA_ETCD_PASSWORD"] == {"secretKeyRef": {"name": secret, "key": "password"}}


def test_without_a_configured_datacenter_the_pools_first_one_is_used() -> None:
    pod = make_pod()
    injection.apply(pod, injection.inject(pod, make_pool(), injection.InjectionSettings()))
    env = env_of(pod["spec"]["initContainers"][0])
    assert env["NEBULA_DATACENTER"] == "dc-a"
    assert env["NEBULA_DATABASE_URL"] == {"secretKeyRef": {"name": "pg-a", "key": "dsn"}}
    assert "NEBULA_ETCD_ENDPOINTS" not in env


def test_a_datacenter_the_pool_does_not_list_is_rejected_with_the_known_ones() -> None:
    settings = injection.InjectionSettings(datacenter="dc-z")
    with pytest.raises(injection.PodRejected, match=r"dc-z.*dc-a, dc-b, dc-c"):
        injection.inject(make_pod(), make_pool(), settings)


def test_injection_is_idempotent() -> None:
    once = injected(make_pod(volumes=[{"name": "cache", "emptyDir": {}}]))
    assert injection.inject(once, make_pool(), SETTINGS) == []
    twice = injected(once)
    assert twice == once
    assert [v["name"] for v in once["spec"]["volumes"]] == [
        "cache",
        injection.DATA_VOLUME,
        injection.SOCKET_VOLUME,
        injection.DATABASES_VOLUME,
    ]
    assert [m["mountPath"] for m in once["spec"]["containers"][0]["volumeMounts"]] == [
        injection.SOCKET_DIR
    ]


def test_a_pod_without_the_label_is_left_alone() -> None:
    pod = make_pod()
    pod["metadata"]["labels"][crd.INJECT_LABEL] = "false"
    assert injection.inject(pod, make_pool(), SETTINGS) == []


def test_the_patch_adds_whole_lists_when_the_pod_has_none() -> None:
    ops = injection.inject(make_pod(), make_pool(), SETTINGS)
    assert [(op["op"], op["path"]) for op in ops] == [
        ("add", "/spec/initContainers"),
        ("add", "/spec/volumes"),
        ("add", "/spec/containers/0/volumeMounts"),
        ("add", "/spec/containers/0/env"),
    ]


def test_every_app_container_gets_the_sidecars_unix_socket_through_an_emptydir() -> None:
    pod = injected(
        make_pod(
            containers=[
                {"name": "web", "image": "web:1"},
                {
                    "name": "worker",
                    "image": "worker:1",
                    "env": [{"name": "MODE", "value": "jobs"}],
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                },
            ],
            volumes=[{"name": "cache", "emptyDir": {}}],
        )
    )
    sidecar = pod["spec"]["initContainers"][0]
    assert env_of(sidecar)[injection.SOCKET_ENV] == injection.SOCKET_PATH
    assert {"name": injection.SOCKET_VOLUME, "mountPath": injection.SOCKET_DIR} in sidecar[
        "volumeMounts"
    ]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "emptyDir" in volumes[injection.SOCKET_VOLUME]
    web, worker = pod["spec"]["containers"]
    assert web["volumeMounts"] == [
        {"name": injection.SOCKET_VOLUME, "mountPath": injection.SOCKET_DIR}
    ]
    assert env_of(web) == {injection.SOCKET_ENV: injection.SOCKET_PATH}
    assert [m["name"] for m in worker["volumeMounts"]] == ["cache", injection.SOCKET_VOLUME]
    assert env_of(worker) == {"MODE": "jobs", injection.SOCKET_ENV: injection.SOCKET_PATH}
    assert injection.SOCKET_PATH.startswith(injection.SOCKET_DIR + "/")


def test_an_app_containers_own_socket_env_and_mount_path_are_left_as_written() -> None:
    own = {"name": injection.SOCKET_ENV, "value": "/elsewhere.sock"}
    mount = {"name": "mine", "mountPath": injection.SOCKET_DIR}
    pod = injected(
        make_pod(containers=[{"name": "web", "image": "w", "env": [own], "volumeMounts": [mount]}])
    )
    web = pod["spec"]["containers"][0]
    assert web["env"] == [own]
    assert web["volumeMounts"] == [mount]


def test_a_volume_name_clash_is_rejected() -> None:
    pod = make_pod(volumes=[{"name": injection.DATA_VOLUME, "emptyDir": {}}])
    with pytest.raises(injection.PodRejected, match=injection.DATA_VOLUME):
        injection.inject(pod, make_pool(), SETTINGS)


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({}, "has no nebula-id.io/pool annotation"),
        ({crd.POOL_ANNOTATION: "  "}, "has no nebula-id.io/pool annotation"),
        ({crd.POOL_ANNOTATION: "Not_A_Name"}, "not a valid NebulaIdPool name"),
    ],
)
def test_pool_name_comes_from_the_annotation(annotations: dict[str, str], message: str) -> None:
    pod = make_pod()
    pod["metadata"]["annotations"] = annotations
    with pytest.raises(injection.PodRejected, match=message):
        injection.pool_name(pod)


def test_pool_name_is_read_and_trimmed() -> None:
    pod = make_pod()
    pod["metadata"]["annotations"][crd.POOL_ANNOTATION] = " ids "
    assert injection.pool_name(pod) == "ids"
