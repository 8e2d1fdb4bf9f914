"""The Helm chart: lint-clean, and accepted by the real kube-apiserver.

Rendered with the defaults and with every optional part switched on, applied
with `--dry-run=server` (the API server validates every object, including
RBAC escalation checks), then installed for real with `helm install`.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.controlplane import ControlPlane, run_cli

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "nebula-id"

ALL_ON = [
    "etcd.tls.secretName=etcd-client-tls",
    "etcd.auth.secretName=etcd-auth",
    "etcd.sidecar.tlsSecretName=etcd-sidecar-tls",
    "etcd.sidecar.authSecretName=etcd-sidecar-auth",
    "datacenter=dc-a",
    "networkPolicy.enabled=true",
    "webhook.url=https://127.0.0.1:9443",
]


def helm(helm_bin: str, *args: str, kubeconfig: str | None = None) -> str:
    argv = [helm_bin, *args]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    return run_cli(argv).stdout


def render(helm_bin: str, namespace: str, values: list[str]) -> list[dict[str, Any]]:
    args = ["template", "nebula-id", str(CHART), "-n", namespace, "--include-crds"]
    args += ["--kube-version", "1.34.0"]
    for value in values:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(helm(helm_bin, *args)) if d]


def test_helm_lint_is_clean(helm_bin: str) -> None:
    for values in ([], [*ALL_ON, "serviceMonitor.enabled=true"]):
        args = ["lint", str(CHART), "--strict"]
        for value in values:
            args += ["--set", value]
        out = helm(helm_bin, *args)
        assert "0 chart(s) failed" in out
        assert "[WARNING]" not in out
        assert "[ERROR]" not in out


def test_the_chart_renders_every_part(helm_bin: str) -> None:
    values = [*ALL_ON, "serviceMonitor.enabled=true", "watchNamespaces={shop,billing}"]
    docs = render(helm_bin, "nebula-id", values)
    kinds = {d["kind"] for d in docs}
    assert {
        "CustomResourceDefinition",
        "ServiceAccount",
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "NetworkPolicy",
        "ClusterRole",
        "Role",
    } <= kinds
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["nebula-id", "operator", "--log-level", "info"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NEBULA_OPERATOR_NAMESPACES"] == "shop,billing"
    assert env["NEBULA_SIDECAR_ETCD_TLS_SECRET"] == "etcd-sidecar-tls"
    assert json.loads(env["NEBULA_SIDECAR_RESOURCES"])["limits"] == {"memory": "128Mi"}
    mwc = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    (hook,) = mwc["webhooks"]
    assert hook["objectSelector"] == {"matchLabels": {"nebula-id.io/inject": "true"}}
    assert hook["clientConfig"] == {"url": "https://127.0.0.1:9443/inject-sidecar"}
    assert hook["failurePolicy"] == "Fail"


def test_without_a_url_the_webhook_calls_the_service(helm_bin: str) -> None:
    docs = render(helm_bin, "ids", [])
    mwc = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    service = next(d for d in docs if d["kind"] == "Service")
    assert mwc["webhooks"][0]["clientConfig"]["service"] == {
        "name": service["metadata"]["name"],
        "namespace": "ids",
        "path": "/inject-sidecar",
        "port": 443,
    }
    excluded = mwc["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert "ids" in excluded
    assert "kube-system" in excluded


@pytest.mark.parametrize("values", [[], ALL_ON], ids=["defaults", "all-options"])
def test_the_api_server_accepts_the_rendered_chart(
    control_plane: ControlPlane, helm_bin: str, values: list[str]
) -> None:
    tag = uuid.uuid4().hex[:6]
    namespaces = [f"helm-dry-{tag}", f"watched-a-{tag}", f"watched-b-{tag}"]
    for namespace in namespaces:
        control_plane.kubectl("create", "namespace", namespace)
    if values:  # the operator's RBAC becomes Roles in each watched namespace
        values = [*values, f"watchNamespaces={{{namespaces[1]},{namespaces[2]}}}"]
    docs = render(helm_bin, namespaces[0], values)
    # `helm test` hooks are not installed; test_chart_platform checks them.
    docs = [d for d in docs if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})]
    text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    out = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=text)
    for doc in docs:
        assert f"{doc['metadata']['name']}" in out.stdout, doc["kind"]
    namespaced = {d.get("metadata", {}).get("namespace") for d in docs} - {None}
    assert namespaced <= set(namespaces)
    for namespace in namespaces:
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


def test_helm_install_for_real_then_uninstall(
    control_plane: ControlPlane, helm_bin: str, kubeconfig: str
) -> None:
    namespace = f"helm-real-{uuid.uuid4().hex[:6]}"
    release = "ids"
    # Other tests may have applied the CRD already: the release adopts it.
    helm(
        helm_bin, "install", release, str(CHART), "-n", namespace, "--create-namespace",
        "--take-ownership", kubeconfig=kubeconfig,
    )  # fmt: skip
    try:
        status = json.loads(
            helm(helm_bin, "status", release, "-n", namespace, "-o", "json", kubeconfig=kubeconfig)
        )
        assert status["info"]["status"] == "deployed"
        assert "kubectl apply -n <app-namespace> -f pool.yaml" in status["info"]["notes"]
        got = json.loads(
            control_plane.kubectl(
                "get",
                "deployment,service,serviceaccount,poddisruptionbudget,role",
                "-n",
                namespace,
                "-o",
                "json",
            ).stdout
        )
        kinds = {item["kind"] for item in got["items"]}
        assert {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "Role"} <= kinds
        mwc = control_plane.kubectl(
            "get", "mutatingwebhookconfiguration", f"{release}-nebula-id", "-o", "json"
        )
        assert json.loads(mwc.stdout)["webhooks"][0]["name"] == "inject.sidecar.nebula-id.io"
        control_plane.kubectl("get", "crd", "nebulaidpools.nebula-id.io")
    finally:
        helm(helm_bin, "uninstall", release, "-n", namespace, kubeconfig=kubeconfig)
    gone = control_plane.kubectl(
        "get", "mutatingwebhookconfiguration", f"{release}-nebula-id", check=False
    )
    assert gone.returncode != 0, "helm uninstall must remove the webhook configuration"
    kept = control_plane.kubectl("get", "crd", "nebulaidpools.nebula-id.io", check=False)
    assert kept.returncode == 0, "crds.keep (the default) keeps the CRD and every pool"
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false")
