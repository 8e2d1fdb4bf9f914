"""Two operator replicas on the real node: the leader's pod dies, the other leads.

The chart runs two replicas; the leader holds an etcd lease under
``/nebula-id/operator/leader`` (its value is the pod name).  The leader's pod is
force-deleted; another replica (the standby, or the one that replaces the killed
pod) takes over, and a pool created afterwards is still reconciled.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.node import support
from e2e.node.cluster import REPO, Node

pytestmark = pytest.mark.e2e

NS = "failover"
LEADER_KEY = "/nebula-id/operator/leader"


def leader(node: Node) -> str | None:
    return support.etcd_keys(node, LEADER_KEY).get(LEADER_KEY)


def operator_pods(node: Node, namespace: str) -> list[str]:
    running = support.running_pods(node, namespace, "app.kubernetes.io/component=operator")
    return sorted(p["metadata"]["name"] for p in running)


def test_killing_the_leaders_pod_hands_over_and_new_pools_still_reconcile(
    node: Node, release: dict[str, Any]
) -> None:
    system = release["namespace"]
    with support.explained(node, system, NS):
        pods = support.wait_until(
            "2 operator pods",
            lambda: len(operator_pods(node, system)) == 2 and operator_pods(node, system),
            timeout=180,
        )
        first = support.wait_until("a leader", lambda: leader(node) in pods and leader(node))
        node.kubectl(
            "delete", "pod", "-n", system, first, "--grace-period=0", "--force", timeout=60
        )
        second = support.wait_until(
            "another replica to lead",
            lambda: (who := leader(node)) and who != first and who,
            timeout=120,
        )
        # The standby, or the replica the Deployment started in the killed one's
        # place, whichever campaigned first: a live operator pod, not the old one.
        support.wait_until(
            "the new leader to run",
            lambda: second in operator_pods(node, system),
            timeout=120,
        )
        node.kubectl("create", "namespace", NS)
        node.kubectl("apply", "-n", NS, "-f", str(REPO / "examples" / "pool-snowflake.yaml"))
        node.kubectl(
            "wait", "-n", NS, "nip/orders", "--for=condition=Ready", "--timeout=120s", timeout=150
        )
        pool = node.kube_json("get", "nip", "orders", "-n", NS)
        assert pool["status"]["workers"]["active"] == 0
        # The Deployment replaces the killed pod: two replicas again.
        support.wait_until(
            "2 operator pods again", lambda: len(operator_pods(node, system)) == 2, timeout=180
        )
