"""What platform teams expect of the chart: a schema that rejects wrong values,
a README generated from values.yaml, a CRD that `helm upgrade` updates, a
PodMonitor, a `helm test` hook and Artifact Hub metadata.

The `helm test` pod itself can only pass on a cluster with a kubelet; here it is
rendered and its objects are checked by the real API server (server-side dry run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nebula_id.core import poolspec
from nebula_id_operator import injection
from tests.k8s import operator_helpers
from tests.support import binaries
from tests.support.controlplane import ControlPlane, run_cli

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "nebula-id"
PREVIOUS_VERSION = "0.1.0"
CRD_NAME = "nebulaidpools.nebula-id.io"


def helm(helm_bin: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # The test etcd is plain http://, which this chart refuses by default.
    insecure = ["--set", "etcd.allowInsecure=true"] if str(CHART) in args else []
    return run_cli([helm_bin, *args, *insecure], check=check)


def render(helm_bin: str, *values: str, namespace: str = "ids") -> list[dict[str, Any]]:
    args = ["template", "ids", str(CHART), "-n", namespace, "--kube-version", "1.34.0"]
    for value in values:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(helm(helm_bin, *args).stdout) if d]


# -- values.schema.json ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("operator.logLevel=verbose", "at '/operator/logLevel': value must be one of"),
        ("replicaCount=two", "at '/replicaCount': got string, want integer"),
        ("webhook.failurPolicy=Ignore", "additional properties 'failurPolicy' not allowed"),
        ("webhook.failurePolicy=Sometimes", "at '/webhook/failurePolicy': value must be one of"),
        ("etcd.endpoints={etcd:2379}", "at '/etcd/endpoints/0': 'etcd:2379' does not match"),
        ("podMonitor.interval=often", "at '/podMonitor/interval'"),
        ("image.sidecar.digest=latest", "at '/image/sidecar/digest'"),
    ],
)
def test_helm_lint_strict_fails_on_a_value_that_breaks_the_schema(
    helm_bin: str, value: str, says: str
) -> None:
    proc = helm(helm_bin, "lint", str(CHART), "--strict", "--set", value, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "values don't meet the specifications of the schema" in out, out
    assert says in out, out


def test_helm_install_refuses_a_wrong_value_and_names_it(
    control_plane: ControlPlane, helm_bin: str, kubeconfig: str
) -> None:
    namespace = f"helm-bad-{uuid.uuid4().hex[:6]}"
    proc = helm(
        helm_bin, "install", "ids", str(CHART), "-n", namespace, "--create-namespace",
        "--kubeconfig", kubeconfig, "--set", "webhook.timeoutSeconds=600",
        check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "at '/webhook/timeoutSeconds': maximum: got 600, want 30" in out, out
    installed = helm(helm_bin, "list", "-n", namespace, "-q", "--kubeconfig", kubeconfig)
    assert installed.stdout.strip() == ""


def test_the_defaults_and_every_option_pass_lint(helm_bin: str) -> None:
    on = [
        "serviceMonitor.enabled=true",
        "podMonitor.enabled=true",
        "podMonitor.namespaces={shop}",
        "crds.keep=false",
        "tests.namespace=shop",
        "prometheusRule.enabled=true",
        "grafanaDashboard.enabled=true",
        "operator.logFormat=json",
        "sidecar.logFormat=json",
    ]
    for values in ([], on):
        args = ["lint", str(CHART), "--strict"]
        for value in values:
            args += ["--set", value]
        out = helm(helm_bin, *args).stdout
        assert "0 chart(s) failed" in out
        assert "[WARNING]" not in out, out
        assert "[ERROR]" not in out, out


# -- the chart README -------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm_docs_bin() -> str:
    return str(binaries.binary("helm-docs"))


def test_the_chart_readme_is_what_helm_docs_generates(helm_docs_bin: str, tmp_path: Path) -> None:
    copy = tmp_path / "nebula-id"
    shutil.copytree(CHART, copy)
    run_cli([helm_docs_bin, "-c", str(copy), "--skip-version-footer", "-l", "warning"])
    generated = (copy / "README.md").read_text()
    assert (CHART / "README.md").read_text() == generated, (
        "helm/nebula-id/README.md is stale: regenerate it with "
        "`$(bash e2e/controlplane/build.sh helm-docs)/helm-docs -c helm/nebula-id "
        "--skip-version-footer`"
    )


def _leaves(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict) and node:
        for key, child in node.items():
            yield from _leaves(child, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def test_the_readme_documents_every_value_with_its_meaning() -> None:
    rows: dict[str, str] = {}
    for line in (CHART / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1] in {"bool", "int", "string", "list", "object", "float"}:
            rows[cells[0]] = cells[3]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    undocumented = []
    for leaf in _leaves(values):
        parts = leaf.split(".")
        documented = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        if not any(rows.get(key) for key in documented):
            undocumented.append(leaf)
    assert undocumented == [], f"values without a `# --` comment in values.yaml: {undocumented}"
    assert all(rows.values()), [key for key, text in rows.items() if not text]


# -- PodMonitor, helm test hook, Artifact Hub ------------------------------------------------


def test_the_pod_monitor_scrapes_every_injected_sidecar(helm_bin: str) -> None:
    docs = render(helm_bin, "podMonitor.enabled=true", "podMonitor.labels.release=prom")
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"] == {"matchLabels": {"nebula-id.io/inject": "true"}}
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("nebula-id", "/metrics")
    scoped = render(helm_bin, "podMonitor.enabled=true", "podMonitor.namespaces={shop}")
    (monitor,) = [d for d in scoped if d["kind"] == "PodMonitor"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["shop"]}
    assert not [d for d in render(helm_bin) if d["kind"] == "PodMonitor"]


def _hooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]


def test_the_helm_test_hook_asks_an_injected_sidecar_for_an_id(
    control_plane: ControlPlane, helm_bin: str
) -> None:
    hooks = _hooks(render(helm_bin))
    assert {d["kind"] for d in hooks} == {"Namespace", "NebulaIdPool", "Pod"}
    assert all(d["metadata"]["annotations"]["helm.sh/hook"] == "test" for d in hooks)
    namespace = next(d for d in hooks if d["kind"] == "Namespace")["metadata"]["name"]
    pool = next(d for d in hooks if d["kind"] == "NebulaIdPool")
    pod = next(d for d in hooks if d["kind"] == "Pod")
    assert pod["metadata"]["namespace"] == pool["metadata"]["namespace"] == namespace
    assert pod["metadata"]["namespace"] != "ids", "the webhook skips the release namespace"
    assert pod["metadata"]["labels"]["nebula-id.io/inject"] == "true"
    assert pod["metadata"]["annotations"]["nebula-id.io/pool"] == pool["metadata"]["name"]
    (container,) = pod["spec"]["containers"]
    assert "http://127.0.0.1:8080/v1/ids/snowflake" in container["command"][-1]
    # Helm prints the pod's output itself, before hook-succeeded deletes the pod.
    policy = pod["metadata"]["annotations"]["helm.sh/hook-output-log-policy"]
    assert set(policy.split(",")) == {"hook-succeeded", "hook-failed"}
    weights = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in hooks}
    assert weights["Namespace"] < weights["NebulaIdPool"] < weights["Pod"]
    # The API server accepts the hook's objects as rendered.
    operator_helpers.install_crd(control_plane)
    tag = uuid.uuid4().hex[:6]
    hooks = _hooks(render(helm_bin, f"tests.namespace=hook-{tag}"))
    assert {d["kind"] for d in hooks} == {"NebulaIdPool", "Pod"}
    control_plane.kubectl("create", "namespace", f"hook-{tag}")
    try:
        text = "\n---\n".join(yaml.safe_dump(d) for d in hooks)
        out = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=text).stdout
        assert "nebulaidpool.nebula-id.io/ids-nebula-id-test created (server dry run)" in out
        assert "pod/ids-nebula-id-test-get-id created (server dry run)" in out
    finally:
        control_plane.kubectl("delete", "namespace", f"hook-{tag}", "--wait=false")
    assert not _hooks(render(helm_bin, "tests.enabled=false"))


@pytest.mark.parametrize("datacenter", ["", "dc-a"])
def test_the_webhook_injects_the_helm_test_pod(helm_bin: str, datacenter: str) -> None:
    """The operator's webhook, given the rendered pool and pod, injects the sidecar.

    It refuses pods of a pool that does not list the operator's datacenter
    (`datacenter`, as the README's `helm install` sets it).
    """
    docs = render(helm_bin, f"datacenter={datacenter}")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env.get("NEBULA_DATACENTER") == (datacenter or None)
    hooks = _hooks(docs)
    pool_doc = next(d for d in hooks if d["kind"] == "NebulaIdPool")
    pod = next(d for d in hooks if d["kind"] == "Pod")
    pool = poolspec.parse_spec(
        pool_doc["spec"],
        namespace=pool_doc["metadata"]["namespace"],
        name=pool_doc["metadata"]["name"],
    )
    settings = injection.InjectionSettings(datacenter=env.get("NEBULA_DATACENTER"))
    ops = injection.inject(pod, pool, settings)
    assert any(op["path"].startswith("/spec/initContainers") for op in ops), ops


def test_chart_metadata_for_artifact_hub() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.29.0-0"
    annotations = chart["annotations"]
    assert annotations["artifacthub.io/operator"] == "true"
    (crd,) = yaml.safe_load(annotations["artifacthub.io/crds"])
    assert (crd["kind"], crd["name"]) == ("NebulaIdPool", CRD_NAME)
    images = yaml.safe_load(annotations["artifacthub.io/images"])
    assert {i["name"] for i in images} == {"nebula-id-operator", "nebula-id-sidecar"}
    assert all(i["image"].endswith(f":{chart['appVersion']}") for i in images)
    examples = yaml.safe_load(annotations["artifacthub.io/crdsExamples"])
    assert examples[0]["kind"] == "NebulaIdPool"
    for change in yaml.safe_load(annotations["artifacthub.io/changes"]):
        assert change["kind"] in {"added", "changed", "deprecated", "removed", "fixed", "security"}


# -- the CRD follows helm upgrade ---------------------------------------------------------


def _previous_chart(into: Path) -> Path:
    """The chart as it was at PREVIOUS_VERSION, from git history."""
    log = run_cli(["git", "-C", str(REPO), "log", "--format=%H", "--", "helm/nebula-id/Chart.yaml"])
    for commit in log.stdout.split():
        shown = run_cli(["git", "-C", str(REPO), "show", f"{commit}:helm/nebula-id/Chart.yaml"])
        if yaml.safe_load(shown.stdout)["version"] == PREVIOUS_VERSION:
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", commit, "helm/nebula-id"],
                capture_output=True,
                check=True,
            )
            subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
            return into / "helm" / "nebula-id"
    raise AssertionError(f"no commit has chart version {PREVIOUS_VERSION} (a shallow clone?)")


@pytest.fixture
def private_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """An API server of its own: the test installs and replaces the cluster-wide CRD."""
    plane = ControlPlane(binaries.bin_dir(), tmp_path_factory.mktemp("upgrade-plane"))
    try:
        yield plane.start()
    finally:
        plane.close()


def _crd(plane: ControlPlane) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)  # type: ignore[no-any-return]


def _timestamp_bits(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["snowflake"]["properties"]["timestampBits"]  # type: ignore[no-any-return]


def test_an_upgrade_from_the_previous_chart_version_updates_the_crd(
    private_plane: ControlPlane, helm_bin: str, tmp_path: Path
) -> None:
    previous = _previous_chart(tmp_path)
    assert yaml.safe_load((previous / "Chart.yaml").read_text())["version"] == PREVIOUS_VERSION
    kube = ["--kubeconfig", str(private_plane.kubeconfig), "-n", "nebula-id"]
    helm(helm_bin, "install", "ids", str(previous), "--create-namespace", *kube)
    before = _crd(private_plane)
    assert "description" not in _timestamp_bits(before), "the 0.1.0 CRD had no such description"

    helm(helm_bin, "upgrade", "ids", str(CHART), "--take-ownership", *kube)
    after = _crd(private_plane)
    source = yaml.safe_load((REPO / "crds" / "nebulaidpools.yaml").read_text())
    assert _timestamp_bits(after)["description"] == _timestamp_bits(source)["description"]
    (version,) = after["spec"]["versions"]
    (wanted,) = source["spec"]["versions"]
    assert version["additionalPrinterColumns"] == wanted["additionalPrinterColumns"]
    assert after["metadata"]["annotations"]["meta.helm.sh/release-name"] == "ids"
    assert after["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert after["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert after["metadata"]["generation"] > before["metadata"]["generation"]

    # A pool made before the upgrade is still served, and `crds.keep` keeps it
    # (and the CRD) through `helm uninstall`.
    private_plane.kubectl(
        "apply", "-n", "nebula-id", "-f", str(REPO / "examples" / "pool-snowflake.yaml")
    )
    helm(helm_bin, "uninstall", "ids", *kube)
    assert _crd(private_plane)["metadata"]["uid"] == after["metadata"]["uid"]
    got = private_plane.kubectl("get", "nip", "orders", "-n", "nebula-id", "-o", "name")
    assert got.stdout.strip() == "nebulaidpool.nebula-id.io/orders"


def test_crds_install_false_leaves_the_crd_out(helm_bin: str) -> None:
    assert any(d["kind"] == "CustomResourceDefinition" for d in render(helm_bin))
    assert not any(
        d["kind"] == "CustomResourceDefinition" for d in render(helm_bin, "crds.install=false")
    )
    (crd,) = [
        d for d in render(helm_bin, "crds.keep=false") if d["kind"] == "CustomResourceDefinition"
    ]
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


def test_the_alerts_and_the_dashboard_ship_as_the_monitoring_files(helm_bin: str) -> None:
    monitoring = CHART / "monitoring"
    docs = render(helm_bin, "prometheusRule.enabled=true", "grafanaDashboard.enabled=true")
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((monitoring / "nebula-id.rules.yaml").read_text())
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["nebula-id.json"])
    assert dashboard == json.loads((monitoring / "nebula-id-dashboard.json").read_text())
    assert not {"PrometheusRule", "ConfigMap"} & {d["kind"] for d in render(helm_bin)}


def test_the_log_formats_reach_the_operator_and_the_sidecars(helm_bin: str) -> None:
    docs = render(helm_bin, "operator.logFormat=json", "sidecar.logFormat=json")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["NEBULA_LOG_FORMAT"] == "json"
    assert env["NEBULA_SIDECAR_LOG_FORMAT"] == "json"
