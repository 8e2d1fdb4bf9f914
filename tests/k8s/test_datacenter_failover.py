"""Datacenter failover end to end: the operator's detector, its Events, and the sidecars.

A real operator (against the real kube-apiserver and etcd), two PostgreSQL
datacenters, and a real `nebula-id serve` sidecar of dc-a, with the short
windows of `spec.failover`:

* kill dc-a's database: within the detector's window `status.datacenters` marks
  dc-a unhealthy, a `DatacenterUnhealthy` Event is posted, and the sidecar loads
  its ranges from dc-b;
* bring dc-a back: only after the recovery window is it healthy again (with a
  `DatacenterHealthy` Event), and after the hold-down the sidecar uses it again;
* with the operator stopped, the sidecar still fails over on its own count.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s import operator_helpers as helpers
from tests.support import http, processes
from tests.support.controlplane import ControlPlane
from tests.support.postgres import PostgresCluster

NAMESPACE = "dc-failover"
PREFIX = "/nebula-id-dc-failover"
THRESHOLD = 2
PROBE_S = 0.5
RECOVERY_S = 3.0
HOLD_DOWN_S = 1.0
DB_TIMEOUT_S = 1.0
# Detection: THRESHOLD probes, each at most one probe interval plus a timed-out
# connect (2 x the database timeout), plus a status patch; the ceiling is generous.
DETECT_BUDGET_S = THRESHOLD * (PROBE_S + 2 * DB_TIMEOUT_S) + 5.0

SPEC = f"""\
failover:
  failureThreshold: {THRESHOLD}
  probeIntervalSeconds: {PROBE_S}
  recoverySeconds: {RECOVERY_S}
  holdDownSeconds: {HOLD_DOWN_S}
  healthMaxAgeSeconds: 5
datacenters:
  - {{name: dc-a, id: 1, databaseSecretRef: {{name: dc-a-db}}}}
  - {{name: dc-b, id: 2, databaseSecretRef: {{name: dc-b-db}}}}
segment: {{tags: [{{name: orders, step: 20, maxStep: 20}}]}}
"""


def operator_process(
    kubeconfig: str, etcd_endpoint: str, workdir: Path, identity: str
) -> helpers.Operator:
    op = helpers.Operator(
        kubeconfig=kubeconfig,
        etcd_endpoint=etcd_endpoint,
        workdir=workdir,
        identity=identity,
        prefix=PREFIX,
        extra_env={
            "NEBULA_OPERATOR_NAMESPACES": NAMESPACE,
            "NEBULA_OPERATOR_DATABASE_TIMEOUT_SECONDS": str(DB_TIMEOUT_S),
        },
    )
    # The probe interval comes from the pool's spec.failover, not from an override.
    op.env.pop("NEBULA_OPERATOR_HEALTH_INTERVAL_SECONDS")
    return op


def secret(plane: ControlPlane, name: str, dsn: str) -> None:
    plane.kubectl("delete", "secret", name, "-n", NAMESPACE, "--ignore-not-found")
    plane.kubectl("create", "secret", "generic", name, "-n", NAMESPACE, f"--from-literal=dsn={dsn}")


def sidecar(etcd_endpoint: str, dcs: dict[str, PostgresCluster], workdir: Path) -> tuple[Any, str]:
    port = processes.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env |= {
        "NEBULA_ETCD_ENDPOINTS": etcd_endpoint,
        "NEBULA_ETCD_PREFIX": PREFIX,
        "NEBULA_POOL": f"{NAMESPACE}/orders",
        "NEBULA_DATACENTER": "dc-a",
        "NEBULA_DATABASE_URL": dcs["dc-a"].dsn(),
        "NEBULA_DATABASE_URLS": f"dc-b={dcs['dc-b'].dsn()}",
        "NEBULA_PORT": str(port),
        "NEBULA_DATA_DIR": str(workdir / "sidecar"),
    }
    log = workdir / "sidecar.log"
    nebula_id = str(Path(sys.executable).parent / "nebula-id")
    proc = processes.spawn([nebula_id, "serve"], log_path=log, env=env)
    base = f"http://127.0.0.1:{port}"
    processes.wait_until(
        lambda: http.get(f"{base}/readyz", timeout=1.0)[0] == 200,
        what="the dc-a sidecar",
        proc=proc,
        log_path=log,
        timeout=30,
        interval=0.1,
    )
    return proc, base


def loads_from(base: str) -> Callable[[str], dict[str, Any] | None]:
    """A probe: take IDs (so ranges are loaded) until the tag's range is from `dc`."""

    def probe(dc: str) -> dict[str, Any] | None:
        http.get(f"{base}/v1/ids/segment/orders?count=20", timeout=5.0)
        code, body = http.get(f"{base}/v1/info", timeout=5.0)
        if code != 200:
            return None
        source: dict[str, Any] = json.loads(body)["segment"]["source"]
        return source if source["tags"]["orders"]["datacenter"] == dc else None

    return probe


def dc_status(plane: ControlPlane, name: str) -> dict[str, Any]:
    pool = helpers.get_json(plane, "nip", "orders", "-n", NAMESPACE) or {}
    rows = (pool.get("status") or {}).get("datacenters") or []
    return next((row for row in rows if row.get("name") == name), {})


def events(plane: ControlPlane, reason: str) -> list[dict[str, Any]]:
    found = helpers.get_json(
        plane, "events", "-n", NAMESPACE, "--field-selector", f"reason={reason}"
    )
    return list((found or {}).get("items") or [])


@pytest.fixture
def setup(
    control_plane: ControlPlane,
    kubeconfig: str,
    etcd_endpoint: str,
    postgres_factory: Callable[[], PostgresCluster],
    tmp_path: Path,
) -> Iterator[tuple[helpers.Operator, dict[str, PostgresCluster], str]]:
    helpers.install_crd(control_plane)
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    dcs = {"dc-a": postgres_factory(), "dc-b": postgres_factory()}
    for name, cluster in dcs.items():
        secret(control_plane, f"{name}-db", cluster.dsn())
    op = operator_process(kubeconfig, etcd_endpoint, tmp_path, "dc-failover").start()
    proc = None
    try:
        helpers.eventually(op.is_leader, timeout=20, what="the operator to lead")
        helpers.apply(
            control_plane,
            "apiVersion: nebula-id.io/v1alpha1\nkind: NebulaIdPool\n"
            f"metadata: {{name: orders, namespace: {NAMESPACE}}}\nspec:\n"
            + textwrap.indent(SPEC, "  "),
        )
        helpers.eventually(
            lambda: (
                dc_status(control_plane, "dc-a").get("healthy") is True
                and dc_status(control_plane, "dc-b").get("healthy") is True
            ),
            timeout=40,
            what="both datacenters healthy in status",
        )
        proc, base = sidecar(etcd_endpoint, dcs, tmp_path)
        yield op, dcs, base
    finally:
        if proc is not None:
            processes.stop(proc)
        if op.proc is None:
            op.start()
        control_plane.kubectl("delete", "nip", "--all", "-n", NAMESPACE, "--timeout=60s")
        op.stop()


def test_a_dead_database_is_detected_reported_and_avoided_then_taken_back(
    control_plane: ControlPlane,
    setup: tuple[helpers.Operator, dict[str, PostgresCluster], str],
) -> None:
    _op, dcs, base = setup
    probe = loads_from(base)
    helpers.eventually(lambda: probe("dc-a"), timeout=10, what="ranges from dc-a")

    dcs["dc-a"].kill()
    killed = time.monotonic()
    row = helpers.eventually(
        lambda: (r := dc_status(control_plane, "dc-a")).get("healthy") is False and r,
        timeout=DETECT_BUDGET_S,
        what="status.datacenters to mark dc-a unhealthy",
    )
    detected = time.monotonic() - killed
    print(f"dc-a marked unhealthy {detected:.1f} s after its database was killed")
    assert row["consecutiveFailures"] >= THRESHOLD
    assert row["lastTransitionTime"]
    warning = helpers.eventually(
        lambda: events(control_plane, "DatacenterUnhealthy"), timeout=10, what="the Event"
    )
    assert warning[0]["type"] == "Warning"
    assert "dc-a" in warning[0]["message"]
    source = helpers.eventually(lambda: probe("dc-b"), timeout=10, what="ranges from dc-b")
    assert source["failover"]["current"] == "dc-b"
    assert source["failover"]["reason"] in {"published_unhealthy", "failure_threshold"}
    assert source["failover"]["switchedAtMs"] > 0
    code, metrics = http.get(f"{base}/metrics", timeout=5.0)
    assert code == 200
    assert b'nebula_id_segment_tag_datacenter{datacenter="dc-b",tag="orders"} 1.0' in metrics

    dcs["dc-a"].start()
    restarted = time.monotonic()
    helpers.eventually(
        lambda: dc_status(control_plane, "dc-a").get("healthy") is True,
        timeout=RECOVERY_S + DETECT_BUDGET_S,
        what="dc-a healthy again",
    )
    recovered = time.monotonic() - restarted
    print(f"dc-a marked healthy {recovered:.1f} s after its database came back")
    assert recovered >= RECOVERY_S - PROBE_S  # not before the recovery window
    healthy = helpers.eventually(
        lambda: events(control_plane, "DatacenterHealthy"), timeout=10, what="the Event"
    )
    assert healthy[0]["type"] == "Normal"
    source = helpers.eventually(
        lambda: probe("dc-a"), timeout=HOLD_DOWN_S + 10, what="ranges from dc-a again"
    )
    assert source["failover"]["reason"] == "preferred_recovered"


def test_without_the_operator_the_sidecar_fails_over_on_its_own_count(
    setup: tuple[helpers.Operator, dict[str, PostgresCluster], str],
) -> None:
    op, dcs, base = setup
    probe = loads_from(base)
    helpers.eventually(lambda: probe("dc-a"), timeout=10, what="ranges from dc-a")
    op.stop()
    dcs["dc-a"].kill()
    killed = time.monotonic()
    source = helpers.eventually(
        lambda: (found := probe("dc-b")) and found["failover"]["current"] == "dc-b" and found,
        timeout=20,
        what="dc-b as the datacenter of new ranges",
    )
    print(f"the sidecar alone moved to dc-b {time.monotonic() - killed:.1f} s after the kill")
    assert source["failover"]["reason"] == "failure_threshold"
    assert source["failover"]["datacenters"]["dc-a"]["consecutiveFailures"] >= THRESHOLD
    dcs["dc-a"].start()
