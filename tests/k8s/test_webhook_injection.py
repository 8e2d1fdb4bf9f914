"""The injection webhook against the real kube-apiserver.

`webhook.run` (the webhook's own kopf instance, as every operator replica runs
it) serves HTTPS on 127.0.0.1 from a thread; the MutatingWebhookConfiguration
is the Helm chart's, rendered with `webhook.url` pointing there.  The
certificate keeper must create the Secret and fill in the caBundle, or the API
server could not call the webhook at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from nebula_id.core import crd, poolspec
from nebula_id_operator import certs, injection, kube, webhook
from tests.support import waiting
from tests.support.controlplane import CommandFailed, ControlPlane
from tests.support.matching import is_subset
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "nebula-id"
RELEASE_NAMESPACE = "nebula-id-system"

SIDECAR = injection.InjectionSettings(
    image="nebula-id-sidecar:test",
    etcd_endpoints=("http://127.0.0.1:2379",),
    datacenter=None,
)


@dataclasses.dataclass(frozen=True)
class _Etcd:
    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)


@dataclasses.dataclass(frozen=True)
class _OperatorView:
    webhook_enabled: bool = True
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 0
    prefix: str = "/nebula-id"
    etcd: _Etcd = dataclasses.field(default_factory=_Etcd)


def render_chart(helm_bin: str, *values: str) -> list[dict[str, Any]]:
    from tests.support.controlplane import run_cli

    argv = [helm_bin, "template", "nebula-id", str(CHART), "-n", RELEASE_NAMESPACE]
    argv += ["--kube-version", "1.34.0", "--include-crds", "--set", "etcd.allowInsecure=true"]
    for value in values:
        argv += ["--set", value]
    rendered = run_cli(argv).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def apply(plane: ControlPlane, *docs: dict[str, Any], namespace: str | None = None) -> None:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    plane.kubectl(*args, input="\n---\n".join(yaml.safe_dump(d) for d in docs))


def create_pod(plane: ControlPlane, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    out = plane.kubectl("create", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(pod))
    created: dict[str, Any] = json.loads(out.stdout)
    return created


def app_pod(pool: str | None, *, inject: bool = True, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "app-", "labels": {"app": "web"}}
    if inject:
        metadata["labels"][crd.INJECT_LABEL] = "true"
    if pool is not None:
        metadata["annotations"] = {crd.POOL_ANNOTATION: pool}
    container = {
        "name": "app",
        "image": "app:1",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [container], **spec},
    }


@dataclasses.dataclass
class RunningWebhook:
    url: str
    settings: webhook.WebhookSettings


@pytest.fixture(scope="module")
def running_webhook(
    control_plane: ControlPlane,
    kubeconfig: str,
    helm_bin: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningWebhook]:
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    docs = render_chart(helm_bin, f"webhook.url={url}")
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    mwc = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    apply(control_plane, *crds)
    control_plane.kubectl(
        "wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s"
    )
    control_plane.kubectl("create", "namespace", RELEASE_NAMESPACE, check=False)
    apply(control_plane, mwc)
    hook = webhook.WebhookSettings(
        namespace=RELEASE_NAMESPACE,
        secret_name="test-webhook-tls",
        configuration_name=mwc["metadata"]["name"],
        url=url,
        cert_dir=str(tmp_path_factory.mktemp("webhook-cert")),
    )
    old_kubeconfig = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = kubeconfig
    stop, ready = threading.Event(), threading.Event()

    async def serve() -> None:
        # As the operator does: one login, one client, shared with the webhook.
        connection = kube.login(kopf.OperatorSettings())
        api = kube.KubeApi(connection)
        try:
            await webhook.run(
                _OperatorView(webhook_port=port),
                connection=connection,
                api=api,
                stop_flag=stop,
                ready_flag=ready,
                webhook=hook,
                sidecar=SIDECAR,
            )
        finally:
            await api.close()

    def run() -> None:
        asyncio.run(serve())

    thread = threading.Thread(target=run, name="kopf-webhook", daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "kopf did not start"
        _wait_for_ca_bundle(control_plane, mwc["metadata"]["name"])
        yield RunningWebhook(url=url, settings=hook)
    finally:
        stop.set()
        thread.join(30)
        if old_kubeconfig is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old_kubeconfig
        control_plane.kubectl(
            "delete", "mutatingwebhookconfiguration", mwc["metadata"]["name"], check=False
        )
    assert not thread.is_alive(), "kopf did not stop"


def _wait_for_ca_bundle(plane: ControlPlane, name: str) -> None:
    def bundled() -> bool:
        out = plane.kubectl("get", "mutatingwebhookconfiguration", name, "-o", "json")
        hooks = json.loads(out.stdout)["webhooks"]
        return all(h["clientConfig"].get("caBundle") for h in hooks)

    waiting.eventually(bundled, 30, what=f"the caBundle of {name}", interval=0.3)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"inject-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


POOL_SPEC: dict[str, Any] = {
    "algorithm": "snowflake",
    "datacenters": [
        {"name": "dc-a", "id": 1, "databaseSecretRef": {"name": "pg-dc-a"}},
        {"name": "dc-b", "id": 2, "databaseSecretRef": {"name": "pg-dc-b", "key": "url"}},
    ],
    "segment": {"tags": [{"name": "orders"}]},
    "sidecar": {"authSecretRef": {"name": "api-keys"}},
}


def make_pool(plane: ControlPlane, namespace: str, name: str = "ids") -> dict[str, Any]:
    doc = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": POOL_SPEC,
    }
    apply(plane, doc)
    out = plane.kubectl("get", "nip", name, "-n", namespace, "-o", "json")
    stored: dict[str, Any] = json.loads(out.stdout)
    return stored


def test_the_certificate_lives_in_a_secret_and_covers_the_url_host(
    running_webhook: RunningWebhook, control_plane: ControlPlane
) -> None:
    hook = running_webhook.settings
    out = control_plane.kubectl(
        "get", "secret", hook.secret_name, "-n", hook.namespace, "-o", "json"
    )
    material = certs.WebhookCerts.from_secret_data(json.loads(out.stdout)["data"])
    assert material is not None
    assert "127.0.0.1" in certs.hosts_of(material.tls_cert)


def test_a_labelled_pod_gets_exactly_the_built_sidecar(
    running_webhook: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    stored = make_pool(control_plane, namespace)
    pod = create_pod(control_plane, namespace, app_pod("ids"))
    expected = injection.build(
        poolspec.parse_spec(stored["spec"], namespace=namespace, name="ids"), SIDECAR
    )
    init = pod["spec"]["initContainers"]
    assert [c["name"] for c in init] == [injection.CONTAINER_NAME]
    assert is_subset(dict(expected.container), init[0]), json.dumps(init[0], indent=1)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for volume in expected.volumes:
        assert is_subset(dict(volume), volumes[volume["name"]])
    env = {e["name"]: e for e in init[0]["env"]}
    assert env["NEBULA_POOL"]["value"] == f"{namespace}/ids"
    # API keys arrive as a mounted file (reloaded on rotation), not as a variable.
    assert "NEBULA_AUTH_API_KEYS" not in env
    assert volumes[injection.AUTH_VOLUME]["secret"]["secretName"] == "api-keys"
    assert volumes[injection.AUTH_VOLUME]["secret"]["items"] == [
        {"key": "api-keys", "path": injection.AUTH_FILE}
    ]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app"]


def test_a_pod_that_has_the_sidecar_is_left_unchanged(
    running_webhook: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    make_pool(control_plane, namespace)
    own = {"name": injection.CONTAINER_NAME, "image": "mine:1", "restartPolicy": "Always"}
    pod = create_pod(control_plane, namespace, app_pod("ids", initContainers=[own]))
    assert [c["image"] for c in pod["spec"]["initContainers"]] == ["mine:1"]
    assert "volumes" not in pod["spec"] or not any(
        v["name"] == injection.DATA_VOLUME for v in pod["spec"]["volumes"]
    )


def test_an_unknown_pool_is_rejected_with_a_clear_message(
    running_webhook: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    with pytest.raises(CommandFailed) as failure:
        create_pod(control_plane, namespace, app_pod("no-such-pool"))
    assert f"NebulaIdPool 'no-such-pool' does not exist in namespace '{namespace}'" in (
        failure.value.stderr
    )


def test_a_missing_pool_annotation_is_rejected(
    running_webhook: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    with pytest.raises(CommandFailed) as failure:
        create_pod(control_plane, namespace, app_pod(None))
    assert "has no nebula-id.io/pool annotation" in failure.value.stderr


def test_unlabelled_pods_are_untouched(
    running_webhook: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    pod = create_pod(control_plane, namespace, app_pod("no-such-pool", inject=False))
    assert "initContainers" not in pod["spec"]


def test_the_injected_pod_passes_the_restricted_pod_security_standard(
    running_webhook: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    make_pool(control_plane, namespace)
    # PodSecurity really enforces here: a root-capable app container is refused...
    insecure = app_pod("ids")
    insecure["spec"]["containers"][0].pop("securityContext")
    with pytest.raises(CommandFailed) as failure:
        create_pod(control_plane, namespace, insecure)
    assert "violates PodSecurity" in failure.value.stderr
    # ...while the injected sidecar adds nothing the standard forbids.
    pod = create_pod(control_plane, namespace, app_pod("ids"))
    assert pod["spec"]["initContainers"][0]["name"] == injection.CONTAINER_NAME
