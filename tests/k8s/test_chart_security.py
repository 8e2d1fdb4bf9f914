"""The chart's security defaults, rendered by the real helm.

It refuses an etcd that anyone on the network could rewrite (plain http:// or no
user) unless `etcd.allowInsecure` is set on purpose, and with an etcd user it
hands each pool its own etcd credential (and only then may create Secrets).
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.binaries import REPO_ROOT
from tests.support.controlplane import ControlPlane, run_cli

CHART = REPO_ROOT / "helm" / "nebula-id"
SECURE = (
    "etcd.endpoints[0]=https://etcd.etcd.svc:2379",
    "etcd.tls.secretName=etcd-tls",
    "etcd.auth.secretName=etcd-root",
)


def template(helm_bin: str, *values: str) -> tuple[int, str, str]:
    argv = [helm_bin, "template", "ids", str(CHART), "-n", "ids", "--kube-version", "1.34.0"]
    for value in values:
        argv += ["--set", value]
    proc = run_cli(argv, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def operator_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def secret_verbs(docs: list[dict[str, Any]]) -> set[str]:
    role = next(
        d
        for d in docs
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator")
    )
    return {v for r in role["rules"] if "secrets" in r["resources"] for v in r["verbs"]}


def test_the_default_plaintext_unauthenticated_etcd_is_refused(helm_bin: str) -> None:
    code, _, err = template(helm_bin)
    assert code != 0
    assert "refusing a plaintext or unauthenticated etcd" in err
    assert "http://etcd.etcd.svc:2379 is not https://" in err
    assert "etcd.auth.secretName is empty" in err

    # TLS alone, or a user alone over plain http, is still refused.
    code, _, err = template(helm_bin, "etcd.endpoints[0]=https://etcd:2379")
    assert code != 0
    assert "etcd.auth.secretName is empty" in err
    code, _, err = template(helm_bin, "etcd.auth.secretName=etcd-root")
    assert code != 0
    assert "is not https://" in err
    code, _, err = template(helm_bin, *SECURE, "etcd.sidecar.endpoints[0]=http://etcd:2379")
    assert code != 0
    assert "http://etcd:2379 is not https://" in err


def test_allow_insecure_is_an_explicit_opt_in_without_pool_users(helm_bin: str) -> None:
    code, out, err = template(helm_bin, "etcd.allowInsecure=true")
    assert code == 0, err
    docs = documents(out)
    # Without an etcd user there is nobody to create pool users with.
    assert "NEBULA_OPERATOR_ETCD_POOL_USERS" not in operator_env(docs)
    assert secret_verbs(docs) == {"get"}


def test_with_tls_and_a_user_each_pool_gets_its_own_etcd_user(helm_bin: str) -> None:
    code, out, err = template(helm_bin, *SECURE)
    assert code == 0, err
    docs = documents(out)
    env = operator_env(docs)
    assert env["NEBULA_OPERATOR_ETCD_POOL_USERS"] == "true"
    assert env["NEBULA_ETCD_CA_FILE"].endswith("ca.crt")
    assert secret_verbs(docs) == {"get", "create"}

    code, out, err = template(helm_bin, *SECURE, "etcd.poolUsers=false")
    assert code == 0, err
    docs = documents(out)
    assert "NEBULA_OPERATOR_ETCD_POOL_USERS" not in operator_env(docs)
    assert secret_verbs(docs) == {"get"}


def test_the_sidecar_network_policy_admits_probes_and_the_apps_own_traffic_only(
    helm_bin: str, control_plane: ControlPlane
) -> None:
    values = (
        "etcd.allowInsecure=true",
        "sidecar.networkPolicy.enabled=true",
        "sidecar.networkPolicy.namespaces={np-shop}",
        "sidecar.networkPolicy.probeFrom[0].namespaceSelector.matchLabels.name=monitoring",
        "sidecar.networkPolicy.appIngress[0].ports[0].port=8443",
    )
    code, out, err = template(helm_bin, *values)
    assert code == 0, err
    docs = documents(out)
    policy = next(
        d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["namespace"] == "np-shop"
    )
    assert policy["spec"]["podSelector"] == {"matchLabels": {"nebula-id.io/inject": "true"}}
    probe, app = policy["spec"]["ingress"]
    assert probe["ports"] == [{"port": 9180, "protocol": "TCP"}]
    assert probe["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    assert app == {"ports": [{"port": 8443}]}
    assert operator_env(docs)["NEBULA_SIDECAR_PROBE_PORT"] == "9180"
    # The API server accepts it as rendered.
    control_plane.kubectl("create", "namespace", "np-shop", check=False)
    control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(policy))


def test_a_custom_namespace_selector_keeps_the_built_in_exclusions(
    helm_bin: str, control_plane: ControlPlane
) -> None:
    code, out, err = template(
        helm_bin,
        "etcd.allowInsecure=true",
        "webhook.namespaceSelector.matchLabels.nebula-id\\.io/injection=enabled",
        "sidecar.imageAllowlist={registry.example/nebula-id-sidecar:*}",
    )
    assert code == 0, err
    docs = documents(out)
    (config,) = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    selector = config["webhooks"][0]["namespaceSelector"]
    assert selector["matchLabels"] == {"nebula-id.io/injection": "enabled"}
    (excluded,) = [
        e for e in selector["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert excluded["operator"] == "NotIn"
    assert set(excluded["values"]) >= {"ids", "kube-system", "kube-public", "kube-node-lease"}
    env = operator_env(docs)
    assert env["NEBULA_SIDECAR_IMAGE_ALLOWLIST"] == "registry.example/nebula-id-sidecar:*"
    # The API server accepts the merged selector.
    control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(config))
