"""Metrics as a platform team scrapes them: real processes, real scrapes.

One operator (leading, its own namespace and etcd prefix) reconciles a pool with
a Snowflake layout and a segment tag in PostgreSQL; one cluster-mode sidecar
serves it.  Both /metrics are scraped after every ID route has been called, then:

- promlint (client_golang's naming rules, built from Go modules) finds nothing;
- every metric that the chart's Grafana dashboard and PrometheusRule name is in
  one of the scrapes;
- the request latency histogram has a series per route and algorithm;
- both run with `--log-format json` (the sidecar's audit log too): every line of
  their logs is one JSON object with the stable keys.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from nebula_id import logs
from tests.k8s import operator_helpers as helpers
from tests.support import binaries, http, processes
from tests.support.controlplane import ControlPlane
from tests.support.postgres import PostgresCluster

NAMESPACE = "observability-tests"
PREFIX = "/nebula-id-observability-tests"
POOL = "watched"
MONITORING = Path(__file__).resolve().parents[2] / "helm" / "nebula-id" / "monitoring"
NEBULA_ID = Path(sys.executable).with_name("nebula-id")


@dataclass(frozen=True)
class Scrapes:
    sidecar: str
    operator: str
    sidecar_log: Path
    audit_log: Path
    operator_log: Path

    def sample_names(self) -> set[str]:
        names = set()
        for text in (self.sidecar, self.operator):
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
        return names


def _secret(plane: ControlPlane, name: str, dsn: str) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {"dsn": base64.b64encode(dsn.encode()).decode()},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _sidecar(workdir: Path, etcd_endpoint: str, dsn: str, **extra: str) -> tuple[int, Path]:
    port = processes.free_port()
    log_path = workdir / "sidecar.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env |= {
        "NEBULA_ETCD_ENDPOINTS": etcd_endpoint,
        "NEBULA_ETCD_PREFIX": PREFIX,
        "NEBULA_POOL": f"{NAMESPACE}/{POOL}",
        "NEBULA_DATACENTER": "dc-a",
        "NEBULA_DATABASE_URL": dsn,
        "NEBULA_PORT": str(port),
        "NEBULA_DATA_DIR": str(workdir / "data"),
        "NEBULA_POD_NAME": "observed",
        "NEBULA_POD_UID": str(uuid.uuid4()),
        **extra,
    }
    proc = processes.spawn([str(NEBULA_ID), "serve"], log_path=log_path, env=env)
    processes.wait_until(
        lambda: http.get(f"http://127.0.0.1:{port}/readyz")[0] == 200,
        what="the sidecar to be ready",
        proc=proc,
        log_path=log_path,
        timeout=30,
        interval=0.2,
    )
    return port, log_path


@pytest.fixture(scope="module")
def scrapes(
    control_plane: ControlPlane,
    kubeconfig: str,
    etcd_endpoint: str,
    postgres: PostgresCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scrapes]:
    helpers.install_crd(control_plane)
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    workdir = tmp_path_factory.mktemp("observability")
    dsn = postgres.create_database(f"observability_{uuid.uuid4().hex[:6]}")
    _secret(control_plane, "db", dsn)
    with helpers.leading_operator(
        control_plane,
        kubeconfig=kubeconfig,
        etcd_endpoint=etcd_endpoint,
        workdir=workdir,
        identity="observed",
        prefix=PREFIX,
        namespace=NAMESPACE,
        extra_env={"NEBULA_LOG_FORMAT": "json"},
    ) as op:
        helpers.apply(
            control_plane,
            textwrap.dedent(
                f"""\
                apiVersion: nebula-id.io/v1alpha1
                kind: NebulaIdPool
                metadata: {{name: {POOL}, namespace: {NAMESPACE}}}
                spec:
                  datacenters: [{{name: dc-a, id: 1, databaseSecretRef: {{name: db}}}}]
                  segment: {{tags: [{{name: orders, step: 100}}]}}
                """
            ),
        )
        helpers.eventually(
            lambda: (
                op.metric(
                    "nebula_id_operator_datacenter_healthy",
                    pool=f"{NAMESPACE}/{POOL}",
                    datacenter="dc-a",
                )
                == 1
            ),
            timeout=30,
            what="the operator to publish dc-a healthy",
        )
        # A pool whose Secret is missing: the operator counts reconcile errors.
        helpers.apply(
            control_plane,
            textwrap.dedent(
                f"""\
                apiVersion: nebula-id.io/v1alpha1
                kind: NebulaIdPool
                metadata: {{name: no-secret, namespace: {NAMESPACE}}}
                spec:
                  datacenters: [{{name: dc-a, databaseSecretRef: {{name: missing}}}}]
                  segment: {{tags: [{{name: orders}}]}}
                """
            ),
        )
        helpers.eventually(
            lambda: "nebula_id_operator_reconcile_errors_total{" in op.probe("/metrics")[1],
            timeout=30,
            what="a reconcile error to be counted",
        )
        audit_log = workdir / "audit.log"
        port, sidecar_log = _sidecar(
            workdir,
            etcd_endpoint,
            dsn,
            NEBULA_LOG_FORMAT="json",
            NEBULA_AUDIT_LOG=str(audit_log),
            NEBULA_LOG_LEVEL="debug",
        )
        base = f"http://127.0.0.1:{port}"
        for path in (
            "/v1/ids",
            "/v1/ids/snowflake",
            "/v1/ids/snowflake?count=3",
            "/v1/ids/uuid7",
            "/v1/ids/uuid4",
            "/v1/ids/segment",
            "/v1/ids/segment/orders",
        ):
            status, body = http.get(base + path)
            assert status == 200, (path, body)
        http.get(base + "/v1/ids/segment/no-such-tag")
        status, sidecar_text = http.get(base + "/metrics")
        assert status == 200
        yield Scrapes(
            sidecar=sidecar_text.decode(),
            operator=op.probe("/metrics")[1],
            sidecar_log=sidecar_log,
            audit_log=audit_log,
            operator_log=op.log_path,
        )


@pytest.fixture(scope="module")
def promlint() -> str:
    return str(binaries.binary("promlint"))


def lint(promlint: str, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promlint], input=text, capture_output=True, text=True, check=False, timeout=30
    )


def test_promlint_finds_a_broken_name(promlint: str) -> None:
    bad = "# HELP x_latency_ms Latency.\n# TYPE x_latency_ms gauge\nx_latency_ms 1\n"
    proc = lint(promlint, bad)
    assert proc.returncode == 1
    assert "x_latency_ms" in proc.stdout
    assert "base unit" in proc.stdout or "abbreviated" in proc.stdout, proc.stdout


def test_a_standalone_sidecar_passes_promlint_too(promlint: str, tmp_path: Path) -> None:
    port = processes.free_port()
    log_path = tmp_path / "standalone.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    proc = processes.spawn(
        [str(NEBULA_ID), "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
         "--tags", "orders"],
        log_path=log_path,
        env=env,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        processes.wait_until(
            lambda: http.get(base + "/readyz")[0] == 200,
            what="the standalone sidecar",
            proc=proc,
            log_path=log_path,
            timeout=30,
            interval=0.2,
        )
        for path in ("/v1/ids", "/v1/ids/segment/orders"):
            assert http.get(base + path)[0] == 200
        text = http.get(base + "/metrics")[1].decode()
    finally:
        processes.stop(proc)
    assert "nebula_id_snowflake_high_water_mark_seconds" in text
    mark = re.search(r"^nebula_id_snowflake_high_water_mark_seconds (\S+)$", text, re.M)
    assert mark is not None
    assert 1.7e9 < float(mark.group(1)) < 1e10, "Unix seconds, not milliseconds"
    proc_lint = lint(promlint, text)
    assert proc_lint.returncode == 0, proc_lint.stdout + proc_lint.stderr


@pytest.mark.parametrize("process", ["sidecar", "operator"])
def test_the_metric_names_follow_the_prometheus_rules(
    scrapes: Scrapes, promlint: str, process: str
) -> None:
    text = getattr(scrapes, process)
    proc = lint(promlint, text)
    assert proc.returncode == 0, (
        f"promlint on the {process}'s /metrics:\n{proc.stdout}{proc.stderr}"
    )
    families = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(families) > 5
    assert all(
        name.startswith("nebula_id_")
        for name in families
        if not name.startswith(("python_", "process_"))
    ), families


def test_the_latency_histogram_has_a_series_per_route_and_algorithm(scrapes: Scrapes) -> None:
    counts = {
        (m["route"], m["algorithm"]): float(m["value"])
        for m in re.finditer(
            r'^nebula_id_http_request_duration_seconds_count\{algorithm="(?P<algorithm>[^"]+)",'
            r'route="(?P<route>[^"]+)"\} (?P<value>\S+)$',
            scrapes.sidecar,
            re.M,
        )
    }
    assert counts[("/v1/ids", "snowflake")] == 1
    assert counts[("/v1/ids/snowflake", "snowflake")] == 2
    assert counts[("/v1/ids/uuid7", "uuid7")] == 1
    assert counts[("/v1/ids/segment", "segment")] == 1
    assert counts[("/v1/ids/segment/{tag}", "segment")] == 2  # one of them a 404
    assert 'le="+Inf"' in scrapes.sidecar
    for gauge in ("nebula_id_worker_lease_remaining_seconds", "nebula_id_segment_remaining"):
        assert re.search(rf"^{gauge}(\{{[^}}]*\}})? [1-9]", scrapes.sidecar, re.M), gauge


def _queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard and the rules, by where it is."""
    found: dict[str, str] = {}
    dashboard = json.loads((MONITORING / "nebula-id-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found[f"variable {variable['name']}"] = variable["definition"]
    rules = yaml.safe_load((MONITORING / "nebula-id.rules.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            found[f"alert {rule['alert']}"] = rule["expr"]
    return found


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bnebula_id_[a-z0-9_]+\b", expr))


def missing_metrics(queries: dict[str, str], scraped: set[str]) -> dict[str, set[str]]:
    missing = {where: metric_names(expr) - scraped for where, expr in queries.items()}
    return {where: names for where, names in missing.items() if names}


def test_every_metric_of_the_dashboard_and_the_alerts_is_scraped(scrapes: Scrapes) -> None:
    queries = _queries()
    alerts = {where for where in queries if where.startswith("alert ")}
    for wanted in ("LeaseLost", "SegmentBuffersLow", "DatacenterUnhealthy", "ClockRollback"):
        assert f"alert NebulaId{wanted}" in alerts
    assert "alert NebulaIdOperatorNoLeader" in alerts
    assert all(metric_names(expr) for expr in queries.values()), "a query names no metric"
    scraped = scrapes.sample_names()
    assert missing_metrics(queries, scraped) == {}
    # The check itself can fail: a renamed metric is reported.
    assert missing_metrics({"x": "nebula_id_ids_issued_ms"}, scraped) == {
        "x": {"nebula_id_ids_issued_ms"}
    }


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines, f"{path} is empty"
    parsed = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise AssertionError(f"not one JSON object per line in {path.name}: {line!r}") from e
        assert isinstance(entry, dict), line
        assert list(entry)[: len(logs.KEYS)] == list(logs.KEYS), line
        assert entry["level"] in {"debug", "info", "warning", "error", "critical"}, line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), line
        parsed.append(entry)
    return parsed


def test_the_sidecar_logs_json_lines_with_its_pool(scrapes: Scrapes) -> None:
    entries = json_lines(scrapes.sidecar_log)
    assert any("starting on http://" in e["message"] for e in entries)
    assert {e["pool"] for e in entries} == {f"{NAMESPACE}/{POOL}"}
    assert any(e["logger"].startswith("nebula_id.") for e in entries)


def test_the_audit_log_has_the_request_fields(scrapes: Scrapes) -> None:
    entries = json_lines(scrapes.audit_log)
    by_path = {e["path"]: e for e in entries}
    entry = by_path["/v1/ids/snowflake?count=3"]
    assert entry["logger"] == "nebula_id.audit"
    assert entry["message"] == "GET /v1/ids/snowflake?count=3 200"
    assert entry["pool"] == f"{NAMESPACE}/{POOL}"
    assert (entry["method"], entry["status"]) == ("GET", 200)
    assert {"remote", "key", "ms"} <= set(entry)
    assert by_path["/v1/ids/segment/no-such-tag"]["status"] == 404


def test_the_operator_logs_json_lines_naming_the_pool(scrapes: Scrapes) -> None:
    entries = json_lines(scrapes.operator_log)
    assert any(e["logger"].startswith("nebula_id_operator") for e in entries)
    pools = {e["pool"] for e in entries if e["pool"]}
    assert f"{NAMESPACE}/no-secret" in pools or f"{NAMESPACE}/{POOL}" in pools, pools
