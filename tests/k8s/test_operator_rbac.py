"""The Helm chart's operator RBAC is enough, and no more than needed.

The operator runs as a ServiceAccount bound only to what `helm template` renders
from `templates/rbac.yaml` (namespaced variant), with a real token from the
TokenRequest API.  It must still bring a segment pool to Ready (reading its
Secret), annotate a claiming pod and post events; and the account must not be
able to list Secrets or touch anything else.  The chart's ValidatingAdmissionPolicy
(`templates/rbac-policy.yaml`) narrows its pod `patch` to the worker-id
annotation, and its aggregated ClusterRoles give `view`/`edit` rights on pools.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from nebula_id.core import crd
from nebula_id.etcd import client as etcd
from tests.k8s import operator_helpers as helpers
from tests.support.controlplane import ControlPlane
from tests.support.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "operator-rbac"
RELEASE_NAMESPACE = "nebula-rbac-system"
PREFIX = "/nebula-id-operator-rbac"
ACCOUNT = "rbac-nebula-id"


def render_rbac(helm_bin: str) -> str:
    proc = subprocess.run(
        [
            helm_bin, "template", "rbac", str(ROOT / "helm" / "nebula-id"),
            "--namespace", RELEASE_NAMESPACE,
            "--set", "etcd.endpoints[0]=http://127.0.0.1:2379",
            "--set", "etcd.allowInsecure=true",
            "--set", f"watchNamespaces[0]={NAMESPACE}",
            "--show-only", "templates/rbac.yaml",
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return proc.stdout


def render_policy(helm_bin: str) -> str:
    proc = subprocess.run(
        [
            helm_bin, "template", "rbac", str(ROOT / "helm" / "nebula-id"),
            "--namespace", RELEASE_NAMESPACE,
            "--set", "etcd.endpoints[0]=http://127.0.0.1:2379",
            "--set", "etcd.allowInsecure=true",
            "--show-only", "templates/rbac-policy.yaml",
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return proc.stdout


def token_kubeconfig(plane: ControlPlane, token: str, path: Path) -> Path:
    admin = yaml.safe_load(Path(plane.kubeconfig).read_text())
    admin["users"] = [{"name": "operator", "user": {"token": token}}]
    for context in admin["contexts"]:
        context["context"]["user"] = "operator"
    path.write_text(yaml.safe_dump(admin))
    return path


@pytest.fixture(scope="module")
def restricted_kubeconfig(
    control_plane: ControlPlane, helm_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    helpers.install_crd(control_plane)
    for namespace in (NAMESPACE, RELEASE_NAMESPACE):
        control_plane.kubectl("create", "namespace", namespace, check=False)
    control_plane.kubectl("create", "serviceaccount", ACCOUNT, "-n", RELEASE_NAMESPACE, check=False)
    rendered = render_rbac(helm_bin)
    kinds = [doc["kind"] for doc in yaml.safe_load_all(rendered) if doc]
    assert kinds == ["Role", "RoleBinding"]
    control_plane.kubectl("apply", "-f", "-", input=rendered)
    policy = [doc for doc in yaml.safe_load_all(render_policy(helm_bin)) if doc]
    assert sorted(doc["kind"] for doc in policy) == [
        "ClusterRole",
        "ClusterRole",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(policy))
    token = control_plane.kubectl(
        "create", "token", ACCOUNT, "-n", RELEASE_NAMESPACE, "--duration=1h"
    ).stdout.strip()
    return token_kubeconfig(
        control_plane, token, tmp_path_factory.mktemp("rbac") / "operator.kubeconfig"
    )


def can_i(plane: ControlPlane, *args: str) -> bool:
    as_user = f"system:serviceaccount:{RELEASE_NAMESPACE}:{ACCOUNT}"
    proc = plane.kubectl("auth", "can-i", *args, f"--as={as_user}", check=False)
    return proc.stdout.strip() == "yes"


def test_the_account_gets_only_what_the_operator_needs(
    control_plane: ControlPlane, restricted_kubeconfig: Path
) -> None:
    assert can_i(control_plane, "watch", "nebulaidpools.nebula-id.io", "-n", NAMESPACE)
    assert can_i(control_plane, "patch", "nebulaidpools.nebula-id.io/status", "-n", NAMESPACE)
    assert can_i(control_plane, "get", "secrets", "-n", NAMESPACE)
    assert not can_i(control_plane, "list", "secrets", "-n", NAMESPACE)
    assert not can_i(control_plane, "watch", "secrets", "-n", NAMESPACE)
    assert not can_i(control_plane, "get", "pods", "-n", NAMESPACE)
    assert not can_i(control_plane, "delete", "nebulaidpools.nebula-id.io", "-n", NAMESPACE)
    assert not can_i(control_plane, "get", "secrets", "-n", "default")
    assert not can_i(control_plane, "create", "secrets", "-n", NAMESPACE)
    assert not can_i(control_plane, "patch", "pods", "-n", "default")
    assert not can_i(control_plane, "patch", "pods", "--subresource=status", "-n", NAMESPACE)
    assert not can_i(control_plane, "list", "nebulaidpools.nebula-id.io", "--all-namespaces")


# Deleting under the restricted account also proves the finalizer needs no more RBAC.
operator = helpers.module_operator(
    namespace=NAMESPACE,
    prefix=PREFIX,
    identity="restricted",
    kubeconfig_fixture="restricted_kubeconfig",
)


def test_restricted_operator_reconciles_a_segment_pool(
    control_plane: ControlPlane,
    operator: helpers.Operator,
    postgres: PostgresCluster,
    etcd_endpoint: str,
) -> None:
    dsn = postgres.create_database("rbac_segments")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rbac-db", "namespace": NAMESPACE},
        "data": {"dsn": base64.b64encode(dsn.encode()).decode()},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(secret))
    control_plane.kubectl(
        "run", "holder", "-n", NAMESPACE, "--image=registry.invalid/app:1", "--restart=Never"
    )
    helpers.apply(
        control_plane,
        textwrap.dedent(
            f"""\
            apiVersion: nebula-id.io/v1alpha1
            kind: NebulaIdPool
            metadata: {{name: restricted, namespace: {NAMESPACE}}}
            spec:
              datacenters: [{{name: dc-a, databaseSecretRef: {{name: rbac-db}}}}]
              segment: {{tags: [{{name: orders}}]}}
            """
        ),
    )

    def ready() -> dict[str, object] | None:
        pool = helpers.get_json(control_plane, "nip", "restricted", "-n", NAMESPACE)
        return pool if helpers.condition(pool, "Ready").get("status") == "True" else None

    try:
        helpers.eventually(ready, timeout=30, what="the pool Ready under restricted RBAC")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{operator.log_tail()}") from e
    rows = postgres.psql(
        f"SELECT tag FROM nebula_segments WHERE pool = '{NAMESPACE}/restricted'",
        db="rbac_segments",
    )
    assert rows.split() == ["orders"]

    async def claim() -> None:
        key = f"{PREFIX}/pools/{NAMESPACE}/restricted/workers/0/5"
        value = json.dumps({"pod": "holder", "namespace": NAMESPACE}).encode()
        async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(etcd_endpoint,))) as client:
            lease = await client.grant(30)
            await client.put(key, value, lease=lease.id)

    asyncio.run(claim())

    def annotated() -> str | None:
        pod = helpers.get_json(control_plane, "pod", "holder", "-n", NAMESPACE)
        return (pod["metadata"].get("annotations") or {}).get(crd.WORKER_ANNOTATION)

    assert helpers.eventually(annotated, timeout=15, what="pod annotation") == "dc-a/5"
    events = helpers.get_json(
        control_plane, "events", "-n", NAMESPACE,
        "--field-selector", "involvedObject.name=restricted",
    )  # fmt: skip
    assert "Ready" in {event["reason"] for event in events["items"]}
    assert "forbidden" not in operator.log_path.read_text().lower()


def test_the_operator_account_may_change_only_the_worker_annotation_of_a_pod(
    control_plane: ControlPlane, operator: helpers.Operator, restricted_kubeconfig: Path
) -> None:
    control_plane.kubectl(
        "run", "guarded", "-n", NAMESPACE, "--image=registry.invalid/app:1", "--restart=Never"
    )

    config = yaml.safe_load(restricted_kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    token = config["users"][0]["user"]["token"]

    def patch(body: dict[str, object]) -> tuple[int, str]:
        """A merge patch as the operator sends it: no GET first (the account may not get pods)."""
        request = urllib.request.Request(
            f"{cluster['server']}/api/v1/namespaces/{NAMESPACE}/pods/guarded",
            data=json.dumps(body).encode(),
            method="PATCH",
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/merge-patch+json",
            },
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def label_denied() -> str | None:
        code, text = patch({"metadata": {"labels": {"app": "payments"}}})
        return text if code == 403 and "ValidatingAdmissionPolicy" in text else None

    denied = helpers.eventually(label_denied, timeout=20, what="the policy to deny a label change")
    assert "may not change a pod's labels" in denied
    code, text = patch({"spec": {"containers": [{"name": "guarded", "image": "evil.invalid/x:1"}]}})
    assert code == 403
    assert "may not change a pod's spec" in text
    code, text = patch({"metadata": {"annotations": {"prometheus.io/scrape": "true"}}})
    assert code == 403
    assert "only the nebula-id.io/worker-id annotation" in text
    code, text = patch({"metadata": {"annotations": {"nebula-id.io/worker-id": "dc-a/9"}}})
    assert code == 200, text
    pod = helpers.get_json(control_plane, "pod", "guarded", "-n", NAMESPACE)
    assert pod["metadata"]["annotations"]["nebula-id.io/worker-id"] == "dc-a/9"
    assert "app" not in (pod["metadata"].get("labels") or {})
    # Others (here the admin) are not bound by the policy.
    control_plane.kubectl("label", "pod", "guarded", "-n", NAMESPACE, "team=ids")


def test_view_and_edit_roles_for_pools_aggregate_into_the_default_roles(
    control_plane: ControlPlane, restricted_kubeconfig: Path
) -> None:
    roles = {
        role["metadata"]["name"]: role
        for role in helpers.get_json(control_plane, "clusterroles")["items"]
        if role["metadata"]["name"] in ("rbac-nebula-id-view", "rbac-nebula-id-edit")
    }
    view, edit = roles["rbac-nebula-id-view"], roles["rbac-nebula-id-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    # Bound directly (no controller-manager aggregates here), each grants what it says.
    for user, role in (
        ("pool-reader", "rbac-nebula-id-view"),
        ("pool-editor", "rbac-nebula-id-edit"),
    ):
        control_plane.kubectl(
            "create", "rolebinding", user, "-n", NAMESPACE,
            f"--clusterrole={role}", f"--user={user}", check=False,
        )  # fmt: skip

    def can(user: str, *args: str) -> bool:
        proc = control_plane.kubectl(
            "auth", "can-i", *args, "-n", NAMESPACE, f"--as={user}", check=False
        )
        return proc.stdout.strip() == "yes"

    helpers.eventually(
        lambda: can("pool-reader", "list", "nebulaidpools.nebula-id.io"),
        timeout=10,
        what="view binding",
    )
    assert can("pool-reader", "get", "nebulaidpools.nebula-id.io", "--subresource=status")
    assert not can("pool-reader", "create", "nebulaidpools.nebula-id.io")
    assert can("pool-editor", "create", "nebulaidpools.nebula-id.io")
    assert can("pool-editor", "delete", "nebulaidpools.nebula-id.io")
    assert not can("pool-editor", "patch", "nebulaidpools.nebula-id.io", "--subresource=status")
    assert not can("pool-editor", "get", "secrets")
