"""The operator as a real process, against the real kube-apiserver, etcd and PostgreSQL.

One operator (watching only this module's namespace, with its own etcd prefix)
serves every test here: pools become Ready, their config lands in etcd and their
tables in PostgreSQL, a missing Secret fails without a hot loop and heals once the
Secret exists, worker claims show in status and on pods, and deletion cleans etcd
but keeps the tables unless asked to drop them.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nebula_id.core import crd, poolspec
from nebula_id.core import keys as pool_keys
from nebula_id.etcd import client as etcd
from tests.k8s import operator_helpers as helpers
from tests.support import http, processes
from tests.support.controlplane import ControlPlane
from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresCluster

NAMESPACE = "operator-tests"
PREFIX = "/nebula-id-operator-tests"


def keys(name: str) -> pool_keys.PoolKeys:
    return pool_keys.PoolKeys(NAMESPACE, name, PREFIX)


async def _range(endpoint: str, key: str, prefix: bool) -> list[etcd.KeyValue]:
    async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(endpoint,))) as client:
        return list((await client.range(key, prefix=prefix)).kvs)


def etcd_values(endpoint: str, key: str, *, prefix: bool = False) -> dict[str, bytes]:
    return {kv.key: kv.value for kv in asyncio.run(_range(endpoint, key, prefix))}


# Leave nothing for other tests' operators: pools go while ours runs the finalizers.
operator = helpers.module_operator(namespace=NAMESPACE, prefix=PREFIX, identity="solo")


def apply_pool(plane: ControlPlane, name: str, spec: str, annotations: str = "{}") -> None:
    manifest = textwrap.dedent(
        f"""\
        apiVersion: nebula-id.io/v1alpha1
        kind: NebulaIdPool
        metadata: {{name: {name}, namespace: {NAMESPACE}, annotations: {annotations}}}
        spec:
        """
    ) + textwrap.indent(textwrap.dedent(spec), "  ")
    helpers.apply(plane, manifest)


def create_secret(plane: ControlPlane, name: str, dsn: str) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {"dsn": base64.b64encode(dsn.encode()).decode()},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def wait_condition(
    plane: ControlPlane,
    op: helpers.Operator,
    name: str,
    type_: str,
    status: str,
    *,
    timeout: float = 30,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = helpers.get_json(plane, "nip", name, "-n", NAMESPACE)
        return found if helpers.condition(found, type_).get("status") == status else None

    try:
        return helpers.eventually(probe, timeout=timeout, what=f"{name} {type_}={status}")
    except AssertionError as e:
        raise AssertionError(f"{e}\noperator log:\n{op.log_tail()}") from e


def segment_rows(cluster: PostgresCluster, db: str, pool_ref: str) -> list[str]:
    out = cluster.psql(
        f"SELECT tag || ':' || datacenter FROM nebula_segments WHERE pool = '{pool_ref}' "
        "ORDER BY 1",
        db=db,
    )
    return [line for line in out.splitlines() if line]


def test_snowflake_pool_becomes_ready_with_its_config_in_etcd(
    control_plane: ControlPlane, operator: helpers.Operator, etcd_endpoint: str
) -> None:
    apply_pool(control_plane, "flakes", "datacenters: [{name: dc-a}, {name: dc-b, id: 7}]")
    pool = wait_condition(control_plane, operator, "flakes", "Ready", "True")

    status = pool["status"]
    assert pool["metadata"]["finalizers"] == ["nebula-id.io/finalizer"]
    assert helpers.condition(pool, "EtcdConfigured")["status"] == "True"
    assert helpers.condition(pool, "DatabaseProvisioned")["reason"] == "NotRequired"
    assert status["observedGeneration"] == pool["metadata"]["generation"]
    assert status["phase"] in ("Ready", "Degraded")
    # dc-a had no id: the operator assigned the lowest free one and reports it.
    assert [(d["name"], d["id"]) for d in status["datacenters"]] == [("dc-a", 0), ("dc-b", 7)]
    assert status["workers"] == {"active": 0, "capacity": 64, "summary": "0/64"}

    stored = etcd_values(etcd_endpoint, keys("flakes").config)[keys("flakes").config]
    config = poolspec.from_json(json.loads(stored))
    assert config.ref == f"{NAMESPACE}/flakes"
    assert [(dc.name, dc.id) for dc in config.datacenters] == [("dc-a", 0), ("dc-b", 7)]
    assert json.loads(stored) == config.to_json()

    # kubectl get nip: the printer columns, filled by the operator.
    def columns() -> list[str] | None:
        out = control_plane.kubectl("get", "nip", "flakes", "-n", NAMESPACE).stdout.splitlines()
        row = out[1].split()
        return out[0].split() + row if row[3] == "0/64" and row[4] == "2/2" else None

    shown = helpers.eventually(columns, timeout=15, what="printer columns with health")
    assert shown[:6] == ["NAME", "ALGORITHM", "READY", "WORKERS", "DATACENTERS", "AGE"]
    assert shown[6:11] == ["flakes", "snowflake", "True", "0/64", "2/2"]


def test_segment_pool_provisions_tables_and_publishes_health(
    control_plane: ControlPlane,
    operator: helpers.Operator,
    etcd_endpoint: str,
    postgres_dcs: dict[str, PostgresCluster],
) -> None:
    for dc, cluster in postgres_dcs.items():
        create_secret(control_plane, f"db-{dc}", cluster.dsn())
    apply_pool(
        control_plane,
        "orders",
        """\
        algorithm: segment
        datacenters:
          - {name: dc-a, databaseSecretRef: {name: db-dc-a}}
          - {name: dc-b, databaseSecretRef: {name: db-dc-b}}
        segment: {tags: [{name: orders, step: 100}, {name: invoices}]}
        """,
    )
    pool = wait_condition(control_plane, operator, "orders", "Ready", "True")
    assert helpers.condition(pool, "DatabaseProvisioned")["reason"] == "Provisioned"
    for dc, cluster in postgres_dcs.items():
        rows = segment_rows(cluster, "nebula", f"{NAMESPACE}/orders")
        assert rows == [f"invoices:{dc}", f"orders:{dc}"]

    pool = wait_condition(control_plane, operator, "orders", "DatacentersHealthy", "True")
    assert pool["status"]["datacentersHealthy"] == "2/2"
    assert all(dc["healthy"] for dc in pool["status"]["datacenters"])
    health = json.loads(etcd_values(etcd_endpoint, keys("orders").health)[keys("orders").health])
    assert set(health["datacenters"]) == {"dc-a", "dc-b"}
    assert all(entry["healthy"] for entry in health["datacenters"].values())
    assert health["updatedAt"].endswith("Z")


def test_missing_secret_fails_without_a_hot_loop_and_heals_when_created(
    control_plane: ControlPlane, operator: helpers.Operator, postgres: PostgresCluster
) -> None:
    dsn = postgres.create_database("late_secret")
    apply_pool(
        control_plane,
        "late",
        """\
        datacenters: [{name: dc-a, databaseSecretRef: {name: late-db}}]
        segment: {tags: [{name: tickets}]}
        """,
    )
    pool = wait_condition(control_plane, operator, "late", "DatabaseProvisioned", "False")
    provisioned = helpers.condition(pool, "DatabaseProvisioned")
    assert provisioned["reason"] == "SecretNotFound"
    assert f"Secret {NAMESPACE}/late-db does not exist" in provisioned["message"]
    assert helpers.condition(pool, "Ready")["status"] == "False"
    assert helpers.condition(pool, "EtcdConfigured")["status"] == "True"
    assert pool["status"]["phase"] == "Failed"

    # No hot loop: kopf does not retry a permanent error; only the slow resync
    # timer (every 2 s here, 30 s by default) looks again.  The window is three of
    # its rounds, counted on /metrics (a transient error would be retried within
    # 1 s); three rounds that come faster than two intervals would be a hot resync.
    resync_s = float(operator.env["NEBULA_OPERATOR_RESYNC_SECONDS"])
    spec_before = operator.metric("nebula_id_operator_reconciles_total", kind="spec")
    resync_before = operator.metric("nebula_id_operator_reconciles_total", kind="resync")
    started = time.monotonic()
    helpers.eventually(
        lambda: (
            operator.metric("nebula_id_operator_reconciles_total", kind="resync")
            >= resync_before + 3
        ),
        timeout=resync_s * 3 + 30,
        what="three resyncs of the pool without its Secret",
    )
    took = time.monotonic() - started
    print(f"\nthree resyncs took {took:.2f} s (resync interval {resync_s:g} s)")
    assert operator.metric("nebula_id_operator_reconciles_total", kind="spec") == spec_before
    assert took >= resync_s * 2 * 0.75, "resyncs come faster than their interval"

    create_secret(control_plane, "late-db", dsn)
    pool = wait_condition(control_plane, operator, "late", "Ready", "True", timeout=20)
    assert helpers.condition(pool, "DatabaseProvisioned")["reason"] == "Provisioned"
    assert pool["status"]["phase"] in ("Ready", "Degraded")
    assert segment_rows(postgres, "late_secret", f"{NAMESPACE}/late") == ["tickets:dc-a"]


def test_invalid_spec_that_passes_the_schema_is_reported(
    control_plane: ControlPlane, operator: helpers.Operator
) -> None:
    """An epoch in the future passes CEL (no clock there) but not the operator."""
    apply_pool(control_plane, "future", 'snowflake: {epoch: "2999-01-01T00:00:00Z"}')
    pool = wait_condition(control_plane, operator, "future", "EtcdConfigured", "False")
    etcd_condition = helpers.condition(pool, "EtcdConfigured")
    assert etcd_condition["reason"] == "InvalidSpec"
    assert "is in the future" in etcd_condition["message"]
    assert pool["status"]["phase"] == "Failed"


def start_sidecar(
    pod: str, etcd_endpoint: str, workdir: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """A real `nebula-id serve` of pool `claimed`, as the injected sidecar of `pod` runs it."""
    port = processes.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env |= {
        "NEBULA_ETCD_ENDPOINTS": etcd_endpoint,
        "NEBULA_ETCD_PREFIX": PREFIX,
        "NEBULA_POOL": f"{NAMESPACE}/claimed",
        "NEBULA_DATACENTER": "dc-a",
        "NEBULA_PORT": str(port),
        "NEBULA_DATA_DIR": str(workdir / pod),
        "NEBULA_POD_NAME": pod,
        "NEBULA_POD_NAMESPACE": NAMESPACE,
        "NEBULA_POD_UID": f"uid-{pod}",
    }
    nebula_id = str(Path(sys.executable).parent / "nebula-id")
    proc = processes.spawn([nebula_id, "serve"], log_path=workdir / f"{pod}.log", env=env)
    processes.wait_until(
        lambda: http.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0)[0] == 200,
        what=f"sidecar of {pod}",
        proc=proc,
        log_path=workdir / f"{pod}.log",
        timeout=20,
        interval=0.1,
    )
    return proc, port


def test_sidecar_claims_show_in_status_and_on_pods(
    control_plane: ControlPlane,
    operator: helpers.Operator,
    etcd_endpoint: str,
    tmp_path: Path,
) -> None:
    apply_pool(control_plane, "claimed", "datacenters: [{name: dc-a}]\nlease: {ttlSeconds: 3}")
    wait_condition(control_plane, operator, "claimed", "Ready", "True")
    for pod in ("app-0", "app-1"):
        control_plane.kubectl(
            "run", pod, "-n", NAMESPACE, "--image=registry.invalid/app:1", "--restart=Never"
        )

    async def put_stale_claim() -> str:
        # A claim record without a lease must not block worker 30 forever.
        async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(etcd_endpoint,))) as client:
            key = keys("claimed").worker(0, 30)
            await client.put(key, json.dumps({"pod": "gone"}).encode())
            return key

    stale_key = asyncio.run(put_stale_claim())
    sidecars = {pod: start_sidecar(pod, etcd_endpoint, tmp_path) for pod in ("app-0", "app-1")}
    try:
        ids = {
            http.get(f"http://127.0.0.1:{port}/v1/ids/snowflake", timeout=2.0)[1]
            for _, port in sidecars.values()
        }
        assert len(ids) == 2

        def workers_active(count: int) -> Callable[[], dict[str, Any] | None]:
            def probe() -> dict[str, Any] | None:
                pool = helpers.get_json(control_plane, "nip", "claimed", "-n", NAMESPACE)
                active = ((pool or {}).get("status") or {}).get("workers", {}).get("active")
                return pool if active == count else None

            return probe

        pool = helpers.eventually(workers_active(2), timeout=15, what="2 active workers")
        assert pool["status"]["workers"]["summary"] == "2/32"

        def annotation(pod: str) -> str | None:
            found = helpers.get_json(control_plane, "pod", pod, "-n", NAMESPACE)
            return (found["metadata"].get("annotations") or {}).get(crd.WORKER_ANNOTATION)

        shown = {
            pod: helpers.eventually(functools.partial(annotation, pod), timeout=10, what=pod)
            for pod in sidecars
        }
        assert sorted(shown.values()) == ["dc-a/0", "dc-a/1"]
        remaining = etcd_values(etcd_endpoint, keys("claimed").workers_prefix, prefix=True)
        assert stale_key not in remaining
        assert len(remaining) == 2

        # The sidecar of app-0 stops (revoking its lease): status and annotation follow.
        processes.stop(sidecars["app-0"][0])
        helpers.eventually(workers_active(1), timeout=15, what="1 active worker")
        helpers.eventually(lambda: annotation("app-0") is None, timeout=10, what="cleared")
        assert annotation("app-1") == shown["app-1"]
    finally:
        for proc, _ in sidecars.values():
            processes.stop(proc)


def test_delete_cleans_etcd_and_keeps_tables_unless_asked(
    control_plane: ControlPlane,
    operator: helpers.Operator,
    etcd_endpoint: str,
    postgres: PostgresCluster,
) -> None:
    dsn = postgres.create_database("deletions")
    create_secret(control_plane, "del-db", dsn)
    spec = """\
        datacenters: [{name: dc-a, databaseSecretRef: {name: del-db}}]
        segment: {tags: [{name: keep}]}
        """
    apply_pool(control_plane, "kept", spec)
    apply_pool(
        control_plane, "dropped", spec, annotations=json.dumps({crd.DROP_DATA_ANNOTATION: "true"})
    )
    for name in ("kept", "dropped"):
        wait_condition(control_plane, operator, name, "Ready", "True")
        assert segment_rows(postgres, "deletions", f"{NAMESPACE}/{name}") == ["keep:dc-a"]
    clock_key = keys("kept").clock(0, 0)
    dropped_clock_key = keys("dropped").clock(0, 0)

    async def put_marks() -> None:
        async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(etcd_endpoint,))) as client:
            await client.put(clock_key, b'{"ms": 1}')
            await client.put(dropped_clock_key, b'{"ms": 1}')

    asyncio.run(put_marks())

    for name in ("kept", "dropped"):
        control_plane.kubectl("delete", "nip", name, "-n", NAMESPACE, "--timeout=60s")
        # Only the marks and the identity (a tombstone) stay.
        left = etcd_values(etcd_endpoint, keys(name).root, prefix=True).keys()
        assert left <= {clock_key, keys(name).identity}, f"{name} left keys in etcd"
    assert segment_rows(postgres, "deletions", f"{NAMESPACE}/kept") == ["keep:dc-a"]
    assert clock_key in etcd_values(etcd_endpoint, clock_key)
    assert segment_rows(postgres, "deletions", f"{NAMESPACE}/dropped") == []
    assert etcd_values(etcd_endpoint, dropped_clock_key) == {}
    kept = json.loads(etcd_values(etcd_endpoint, keys("kept").identity)[keys("kept").identity])
    dropped_key = keys("dropped").identity
    dropped = json.loads(etcd_values(etcd_endpoint, dropped_key)[dropped_key])
    assert (kept["state"], dropped["state"]) == ("deleted", "dropped")

    # Re-created with another epoch while its IDs are remembered: refused, with a
    # condition and an Event that say why and what to do.
    moved = spec.rstrip(" ") + "        snowflake: {epoch: '2025-01-01T00:00:00Z'}\n"
    apply_pool(control_plane, "kept", moved)
    refused = wait_condition(control_plane, operator, "kept", "EtcdConfigured", "False")
    condition = helpers.condition(refused, "EtcdConfigured")
    assert condition["reason"] == "RecreationRefused"
    assert "remembered" in condition["message"]
    events = control_plane.kubectl(
        "get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.name=kept"
    ).stdout
    assert "RecreationRefused" in events
    # Created again with the same spec, it continues above every ID it issued.
    control_plane.kubectl("delete", "nip", "kept", "-n", NAMESPACE, "--timeout=60s")
    apply_pool(control_plane, "kept", spec)
    wait_condition(control_plane, operator, "kept", "Ready", "True")
    again = json.loads(etcd_values(etcd_endpoint, keys("kept").identity)[keys("kept").identity])
    assert (again["state"], again["generation"]) == ("live", kept["generation"] + 1)
    assert segment_rows(postgres, "deletions", f"{NAMESPACE}/kept") == ["keep:dc-a"]
    control_plane.kubectl("delete", "nip", "kept", "-n", NAMESPACE, "--timeout=60s")


def test_probes_and_metrics(operator: helpers.Operator) -> None:
    code, body = operator.probe("/readyz")
    assert code == 200
    assert json.loads(body)["role"] == "leader"
    assert operator.probe("/healthz")[0] == 200
    assert operator.metric("nebula_id_operator_leader") == 1.0
    assert operator.metric("nebula_id_operator_reconciles_total", kind="spec") >= 1


def test_unreachable_database_retries_shows_in_conditions_and_heals(
    control_plane: ControlPlane,
    operator: helpers.Operator,
    etcd_endpoint: str,
    postgres: PostgresCluster,
    postgres_factory: Callable[[], PostgresCluster],
) -> None:
    flaky = postgres_factory()
    create_secret(control_plane, "steady-db", postgres.dsn())
    create_secret(control_plane, "flaky-db", flaky.dsn())
    flaky.stop()
    apply_pool(
        control_plane,
        "flaky",
        """\
        datacenters:
          - {name: dc-a, databaseSecretRef: {name: steady-db}}
          - {name: dc-b, databaseSecretRef: {name: flaky-db}}
        segment: {tags: [{name: parcels}]}
        """,
    )
    pool = wait_condition(control_plane, operator, "flaky", "DatabaseProvisioned", "False")
    provisioned = helpers.condition(pool, "DatabaseProvisioned")
    assert provisioned["reason"] == "DatabaseUnavailable"
    assert provisioned["message"].startswith("Datacenter dc-b: cannot provision segments")
    assert pool["status"]["phase"] == "Pending"  # transient: kopf retries with backoff
    assert segment_rows(postgres, "nebula", f"{NAMESPACE}/flaky") == ["parcels:dc-a"]

    pool = wait_condition(control_plane, operator, "flaky", "DatacentersHealthy", "False")
    assert pool["status"]["datacentersHealthy"] == "1/2"
    sick = next(dc for dc in pool["status"]["datacenters"] if dc["name"] == "dc-b")
    assert sick["healthy"] is False
    health = json.loads(etcd_values(etcd_endpoint, keys("flaky").health)[keys("flaky").health])
    assert health["datacenters"]["dc-b"]["healthy"] is False
    assert health["datacenters"]["dc-a"]["healthy"] is True

    def warnings() -> set[str] | None:
        events = helpers.get_json(
            control_plane, "events", "-n", NAMESPACE,
            "--field-selector", "involvedObject.name=flaky,type=Warning",
        )  # fmt: skip
        reasons = {event["reason"] for event in (events or {}).get("items", [])}
        return reasons if {"DatabaseUnavailable", "Unhealthy"} <= reasons else None

    helpers.eventually(warnings, timeout=10, what="Warning events for the transitions")
    errors_seen = operator.metric(
        "nebula_id_operator_reconcile_errors_total", kind="spec", reason="StorageError"
    )
    assert errors_seen >= 1

    flaky.start()
    pool = wait_condition(control_plane, operator, "flaky", "Ready", "True", timeout=40)
    assert segment_rows(flaky, "nebula", f"{NAMESPACE}/flaky") == ["parcels:dc-b"]
    pool = wait_condition(control_plane, operator, "flaky", "DatacentersHealthy", "True")
    assert pool["status"]["datacentersHealthy"] == "2/2"


def test_a_mysql_datacenter_is_provisioned_checked_and_dropped_like_postgresql(
    control_plane: ControlPlane,
    operator: helpers.Operator,
    postgres: PostgresCluster,
    mariadb: MariaDBServer,
) -> None:
    maria_dsn = mariadb.create_database("operator_mixed").replace("mysql://", "mariadb://")
    create_secret(control_plane, "mixed-maria", maria_dsn)
    create_secret(control_plane, "mixed-pg", postgres.create_database("operator_mixed"))
    apply_pool(
        control_plane,
        "mixed",
        """\
        algorithm: segment
        datacenters:
          - {name: dc-a, databaseSecretRef: {name: mixed-maria}}
          - {name: dc-b, databaseSecretRef: {name: mixed-pg}}
        segment: {tags: [{name: orders, step: 100}, {name: invoices}]}
        """,
        annotations=json.dumps({crd.DROP_DATA_ANNOTATION: "true"}),
    )
    pool = wait_condition(control_plane, operator, "mixed", "Ready", "True")
    assert helpers.condition(pool, "DatabaseProvisioned")["reason"] == "Provisioned"
    pool = wait_condition(control_plane, operator, "mixed", "DatacentersHealthy", "True")
    assert pool["status"]["datacentersHealthy"] == "2/2"

    def maria_rows() -> list[str]:
        out = mariadb.sql(
            "SELECT CONCAT(tag, ':', datacenter) FROM nebula_segments "
            f"WHERE pool = '{NAMESPACE}/mixed' ORDER BY 1",
            db="operator_mixed",
        )
        return out.split()

    assert maria_rows() == ["invoices:dc-a", "orders:dc-a"]
    assert segment_rows(postgres, "operator_mixed", f"{NAMESPACE}/mixed") == [
        "invoices:dc-b",
        "orders:dc-b",
    ]
    control_plane.kubectl("delete", "nip", "mixed", "-n", NAMESPACE, "--timeout=60s")
    assert maria_rows() == []
    assert segment_rows(postgres, "operator_mixed", f"{NAMESPACE}/mixed") == []
