"""`helm upgrade` to new values, then `helm uninstall`: nothing is left behind.

Runs after the other scenarios of the tier (it removes the release they use).
The upgrade rolls the operator with the new values and new pods get sidecars
with the new defaults; the uninstall removes the webhook configuration, the
operator, its RBAC, the leader's lease and the webhook's TLS Secret, and once
the apps are gone no worker claim outlives its lease.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.node import support
from e2e.node.cluster import REPO, Node
from nebula_id_operator import injection

pytestmark = pytest.mark.e2e

NS = "upgrade"


def test_helm_upgrade_then_uninstall_leaves_nothing_behind(
    node: Node, release: dict[str, Any], node_images: dict[str, Any]
) -> None:
    system = release["namespace"]
    with support.explained(node, system, NS):
        node.kubectl("create", "namespace", NS)
        node.kubectl("apply", "-n", NS, "-f", str(REPO / "examples" / "pool-snowflake.yaml"))
        node.kubectl(
            "wait", "-n", NS, "nip/orders", "--for=condition=Ready", "--timeout=120s", timeout=150
        )

        # The upgrade: new sidecar defaults and a new log level, the images unchanged.
        node.helm(
            "upgrade", release["name"], str(REPO / "helm" / "nebula-id"), "-n", system,
            "--reuse-values", "--set", "operator.logLevel=debug",
            "--set", "sidecar.resources.limits.memory=96Mi", "--wait", "--timeout=300s",
        )  # fmt: skip
        # Only the new replicas serve the webhook from here on (the old ones, with
        # the old sidecar defaults, are gone).
        template = node.kube_json("get", "deployment", "-n", system, release["name"])
        new_hash = support.wait_until(
            "the old operator pods to go",
            lambda: (
                len(
                    hashes := {
                        p["metadata"]["labels"].get("pod-template-hash")
                        for p in node.kube_json("get", "pods", "-n", system)["items"]
                    }
                )
                == 1
                and hashes.pop()
            ),
            timeout=120,
        )
        assert new_hash
        deployment = template
        assert deployment["status"].get("updatedReplicas") == 2, deployment["status"]
        assert "debug" in json.dumps(deployment["spec"]["template"]["spec"]["containers"][0])
        node.kubectl("apply", "-n", NS, "-f", str(REPO / "examples" / "app-deployment.yaml"))
        node.kubectl("rollout", "status", "-n", NS, "deployment/web", "--timeout=180s", timeout=240)
        pods = support.running_pods(node, NS, "app=web")
        assert pods
        for pod in pods:
            (sidecar,) = pod["spec"]["initContainers"]
            assert sidecar["name"] == injection.CONTAINER_NAME
            assert sidecar["resources"]["limits"]["memory"] == "96Mi", sidecar["resources"]

        # The uninstall.
        node.helm("uninstall", release["name"], "-n", system, "--wait", "--timeout=180s")
        support.wait_until(
            "the operator pods to go",
            lambda: not node.kube_json("get", "pods", "-n", system)["items"],
            timeout=120,
        )
        assert node.kube_json("get", "mutatingwebhookconfigurations")["items"] == []
        labelled = f"app.kubernetes.io/instance={release['name']}"
        for kind in ("clusterroles", "clusterrolebindings", "validatingwebhookconfigurations"):
            assert node.kube_json("get", kind, "-l", labelled)["items"] == [], kind
        left = node.kube_json(
            "get", "all,secrets,configmaps,roles,rolebindings", "-n", system, "-l", labelled
        )
        assert left["items"] == [], [i["metadata"]["name"] for i in left["items"]]
        assert support.etcd_keys(node, "/nebula-id/operator/") == {}
        # The webhook's TLS Secret is the operator's, not Helm's: it goes with the
        # webhook configuration that owns it (garbage collection).
        support.wait_until(
            "the webhook's TLS Secret to go",
            lambda: not node.kube_json("get", "secrets", "-n", system)["items"],
            timeout=60,
        )

        # The apps go too; then no claim is left in etcd once their leases have run out.
        for ns in ("shop", "billing", "failover", NS):
            node.kubectl(
                "delete", "deployment", "--all", "-n", ns, "--wait=true", timeout=180, check=False
            )
        support.wait_until(
            "the app pods to go",
            lambda: (
                not [
                    p
                    for ns in ("shop", "billing", NS)
                    for p in node.kube_json("get", "pods", "-n", ns)["items"]
                ]
            ),
            timeout=180,
        )
        support.wait_until(
            "every worker claim to leave etcd",
            lambda: (
                not [k for k in support.etcd_keys(node, "/nebula-id/pools/") if "/workers/" in k]
            ),
            timeout=60,
        )
