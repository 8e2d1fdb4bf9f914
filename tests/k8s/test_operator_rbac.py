"""The Helm chart's operator RBAC is enough, and no more than needed.

The operator runs as a ServiceAccount bound only to what `helm template` renders
from `templates/rbac.yaml` (namespaced variant), with a real token from the
TokenRequest API.  It must still bring a segment pool to Ready (reading its
Secret), annotate a claiming pod and post events; and the account must not be
able to list Secrets or touch anything else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

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
    assert not can_i(control_plane, "list", "nebulaidpools.nebula-id.io", "--all-namespaces")


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    restricted_kubeconfig: Path,
    etcd_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[helpers.Operator]:
    # Deleting under the restricted account also proves the finalizer needs no more RBAC.
    with helpers.leading_operator(
        control_plane,
        kubeconfig=str(restricted_kubeconfig),
        etcd_endpoint=etcd_endpoint,
        workdir=tmp_path_factory.mktemp("rbac-operator"),
        identity="restricted",
        prefix=PREFIX,
        namespace=NAMESPACE,
    ) as op:
        yield op


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
        return (pod["metadata"].get("annotations") or {}).get("nebula-id.io/worker-id")

    assert helpers.eventually(annotated, timeout=15, what="pod annotation") == "dc-a/5"
    events = helpers.get_json(
        control_plane, "events", "-n", NAMESPACE,
        "--field-selector", "involvedObject.name=restricted",
    )  # fmt: skip
    assert "Ready" in {event["reason"] for event in events["items"]}
    assert "forbidden" not in operator.log_path.read_text().lower()
