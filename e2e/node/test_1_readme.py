"""The README's "Running on Kubernetes" steps, run as written on a real node.

`helm install` of the chart with the images built from the Dockerfiles, a
Snowflake pool, the example Deployment (labelled for injection) in a namespace
that enforces the `restricted` Pod Security Standard, then IDs fetched from
inside the app container with `kubectl exec`.  The pods really run: the native
sidecar starts before the app, passes its probes, claims a worker ID in etcd,
and the app reaches it on 127.0.0.1.  Then the Deployment is scaled to 10
replicas, restarted and has a pod deleted: every worker ID stays unique.
Last, `helm test` (the README's check of an install) passes, twice.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from collections import Counter
from typing import Any

import pytest

from e2e.node import support
from e2e.node.cluster import Node
from nebula_id.core import crd, poolspec
from nebula_id.core import keys as pool_keys
from nebula_id_operator import injection

pytestmark = pytest.mark.e2e

APP_NS = "shop"
SELECTOR = "app=web"


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def worker_ids(node: Node) -> dict[str, int]:
    """Pod name -> worker ID, from the pods' annotations (``dc-a/N``)."""
    result = {}
    for pod in support.running_pods(node, APP_NS, SELECTOR):
        note = pod["metadata"].get("annotations", {}).get(crd.WORKER_ANNOTATION)
        if note:
            result[pod["metadata"]["name"]] = int(note.split("/")[1])
    return result


def claims(node: Node) -> dict[str, str]:
    return support.etcd_keys(node, pool_keys.PoolKeys(APP_NS, "orders").workers_prefix)


def ids_from_app(node: Node, pod: str, count: int = 3) -> list[int]:
    got = support.exec_json(
        node, APP_NS, pod, "web", "curl", "-fsS", f"http://127.0.0.1:8080/v1/ids?count={count}"
    )
    return [int(i) for i in got["ids"]]


@pytest.fixture(scope="module")
def readme_app(node: Node, release: dict[str, Any]) -> dict[str, Any]:
    """Steps 2-4 of the README (step 1, `helm install`, is the `release` fixture)."""
    with support.explained(node, APP_NS, release["namespace"]):
        steps = support.readme_steps()
        rest = [s for s in steps if s[0] != "helm"]
        assert [s[:2] for s in rest] == [
            ["kubectl", "apply"],
            ["kubectl", "wait"],
            ["kubectl", "apply"],
            ["curl", "http://127.0.0.1:8080/v1/ids"],
        ], rest
        # The app's namespace is the user's; it enforces the restricted standard.
        node.kubectl("create", "namespace", APP_NS)
        node.kubectl("label", "namespace", APP_NS, "pod-security.kubernetes.io/enforce=restricted")
        for argv in rest[:3]:
            argv = support.localize(argv)
            if argv[1] == "wait":
                argv.append("--timeout=180s")  # the operator's first start on a busy machine
            node.kubectl(*argv[1:], timeout=240)
        node.kubectl(
            "rollout", "status", "-n", APP_NS, "deployment/web", "--timeout=180s", timeout=240
        )
        return {"curl": rest[3]}


def test_pods_become_ready_with_the_native_sidecar_first(
    node: Node, readme_app: dict[str, Any]
) -> None:
    with support.explained(node, APP_NS):
        running = support.running_pods(node, APP_NS, SELECTOR)
        assert len(running) == 2
        for pod in running:
            (sidecar,) = pod["spec"]["initContainers"]
            assert sidecar["name"] == injection.CONTAINER_NAME
            assert sidecar["restartPolicy"] == "Always"
            (init_status,) = pod["status"]["initContainerStatuses"]
            (app_status,) = pod["status"]["containerStatuses"]
            assert init_status["ready"], init_status
            assert init_status["started"], init_status
            assert app_status["ready"], app_status
            # The kubelet started the sidecar (and waited for its startup probe) first.
            assert _time(init_status["state"]["running"]["startedAt"]) <= _time(
                app_status["state"]["running"]["startedAt"]
            )
            assert init_status["restartCount"] == 0, init_status


def test_the_app_gets_ids_on_localhost_from_its_workers_claim(
    node: Node, readme_app: dict[str, Any]
) -> None:
    with support.explained(node, APP_NS):
        workers = support.wait_until(
            "both pods annotated with a worker ID",
            lambda: len(worker_ids(node)) == 2 and worker_ids(node),
        )
        assert len(set(workers.values())) == 2, workers
        pool = node.kube_json("get", "nip", "orders", "-n", APP_NS)
        layout = poolspec.parse_spec(pool["spec"], namespace=APP_NS, name="orders").layout
        held = claims(node)
        for pod, worker in workers.items():
            assert pool_keys.PoolKeys(APP_NS, "orders").worker(1, worker) in held, (pod, held)
            # The README's step 4, from inside the app container.
            curl = readme_app["curl"]
            got = support.exec_json(node, APP_NS, pod, "web", curl[0], "-fsS", *curl[1:])
            assert got.get("id") or got.get("ids"), got
            ids = ids_from_app(node, pod)
            assert ids == sorted(set(ids)), ids
            parsed = layout.parse(ids[0])
            assert (parsed.datacenter, parsed.worker) == (1, worker)
        wait_for_active(node, 2)


def wait_for_active(node: Node, count: int) -> None:
    support.wait_until(
        f"status.workers.active == {count}",
        lambda: (
            node.kube_json("get", "nip", "orders", "-n", APP_NS)["status"]["workers"]["active"]
            == count
        ),
        timeout=60,
    )


def test_restricted_pod_security_is_enforced_and_the_injected_pod_runs(
    node: Node, readme_app: dict[str, Any]
) -> None:
    ns = node.kube_json("get", "namespace", APP_NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # Enforced: a pod that runs as root is refused in this namespace...
    refused = node.kubectl(
        "run", "as-root", "-n", APP_NS, "--image=docker.io/curlimages/curl:8.11.1",
        "--restart=Never", "--command", "--", "sleep", "60", check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr, refused.stderr
    # ...while the injected pods were admitted and run.
    assert len(support.running_pods(node, APP_NS, SELECTOR)) == 2


def test_ten_replicas_restart_and_deletion_keep_every_worker_id_unique(
    node: Node, readme_app: dict[str, Any], record_property: Any
) -> None:
    seen: list[dict[str, int]] = []

    def settle(count: int, what: str) -> dict[str, int]:
        def ready() -> dict[str, int] | None:
            workers = worker_ids(node)
            all_pods = [
                p
                for p in support.pods(node, APP_NS, SELECTOR)
                if not p["metadata"].get("deletionTimestamp")
            ]
            return workers if len(workers) == count and len(all_pods) == count else None

        workers: dict[str, int] = support.wait_until(what, ready, timeout=300, interval=1)
        # At any moment, no two live pods hold the same worker ID, and etcd agrees.
        assert len(set(workers.values())) == count, workers
        held = claims(node)
        for worker in workers.values():
            assert pool_keys.PoolKeys(APP_NS, "orders").worker(1, worker) in held
        seen.append(workers)
        return workers

    with support.explained(node, APP_NS):
        node.kubectl("scale", "-n", APP_NS, "deployment/web", "--replicas=10")
        ten = settle(10, "10 Ready pods with worker IDs")
        node.kubectl("rollout", "restart", "-n", APP_NS, "deployment/web")
        node.kubectl(
            "rollout", "status", "-n", APP_NS, "deployment/web", "--timeout=300s", timeout=360
        )
        restarted = settle(10, "10 restarted pods with worker IDs")
        assert not set(ten) & set(restarted), "the rollout replaced every pod"
        victim = sorted(restarted)[0]
        node.kubectl("delete", "pod", "-n", APP_NS, victim, "--wait=true", timeout=120)
        after = settle(10, "10 pods again after a deletion")
        assert victim not in after
        # IDs served right now by every pod are all distinct.
        served: list[int] = []
        for pod in after:
            served += ids_from_app(node, pod, count=5)
        assert len(served) == len(set(served)) == 50
        counts = Counter(w for snapshot in seen for w in snapshot.values())
        record_property("worker_ids", json.dumps(seen))
        print("worker IDs per phase:", json.dumps(seen))
        assert counts  # recorded
        node.kubectl("scale", "-n", APP_NS, "deployment/web", "--replicas=2")
        settle(2, "back to 2 pods")
        wait_for_active(node, 2)


def test_helm_test_gets_an_id_from_an_injected_sidecar(node: Node, release: dict[str, Any]) -> None:
    """`helm test`: the chart's hook pod gets the sidecar injected and an ID from it.

    Helm prints the pod's output (the chart's hook-output-log-policy) on stderr.
    The second run replaces the namespace and pool the first one left.
    """
    name, system = release["name"], release["namespace"]
    # The test pool's layout: the defaults (its spec names only the datacenter).
    layout = poolspec.parse_spec({}, namespace=f"{name}-test", name=f"{name}-test").layout
    got: list[int] = []
    for _ in range(2):
        with support.explained(node, f"{name}-test", system):
            done = node.helm("test", name, "-n", system, "--timeout", "240s", timeout=300)
        suites = re.findall(r"TEST SUITE:\s+(\S+)\n(?:.*\n)*?Phase:\s+(\w+)", done.stdout)
        # The namespace and the pool (`<name>-test`), then the pod.
        assert sorted(suites) == [
            (f"{name}-test", "Succeeded"),
            (f"{name}-test", "Succeeded"),
            (f"{name}-test-get-id", "Succeeded"),
        ], done.stdout
        (answer,) = re.findall(r"nebula-id sidecar answered \S+ with ID (\d+)", done.stderr)
        got.append(int(answer))
        issued = layout.parse(got[-1]).timestamp_ms / 1000
        assert abs(issued - time.time()) < 600, (got[-1], issued)
    assert got[0] != got[1], got
