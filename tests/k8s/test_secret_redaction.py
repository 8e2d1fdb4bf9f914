"""No database secret ever reaches a pool's status, its Events, the operator's logs or metrics.

A user who may edit pools but not read Secrets could otherwise point
`databaseSecretRef` at any Secret and read it back from `kubectl get nip -o
yaml`.  Each datacenter here names a Secret whose DSN carries a recognisable
marker in every place a DSN can hold one (user, password, database, query
parameters, libpq keywords, a value that is no DSN at all, a real server that
refuses the database); the real operator reports each failure, naming only the
host and the error class, and the marker appears nowhere.
"""

from __future__ import annotations

import base64
import json
import textwrap

from tests.k8s import operator_helpers as helpers
from tests.support.controlplane import ControlPlane
from tests.support.postgres import PostgresCluster

NAMESPACE = "redaction-tests"
PREFIX = "/nebula-id-redaction-tests"
MARK = "Zq9xLEAKED"


def planted_dsns(postgres_port: int) -> dict[str, str]:
    return {
        "url": (
            f"postgresql://user{MARK}:pw{MARK}@127.0.0.1:1/db{MARK}"
            f"?password={MARK}&sslpassword={MARK}&options=-c%20x%3D{MARK}&application_name={MARK}"
        ),
        "keywords": f"host=127.0.0.1 port=1 user=u{MARK} password={MARK} dbname=d{MARK}",
        "not-a-dsn": f"{MARK}-{MARK}",
        "broken-url": f"postgresql://u:{MARK}@[::1/{MARK}",
        "real-server": (
            f"postgresql://postgres:{MARK}@127.0.0.1:{postgres_port}/missing{MARK}?sslmode=disable"
        ),
    }


operator = helpers.module_operator(namespace=NAMESPACE, prefix=PREFIX, identity="redaction")


def test_no_planted_secret_reaches_status_events_logs_or_metrics(
    control_plane: ControlPlane, operator: helpers.Operator, postgres: PostgresCluster
) -> None:
    dsns = planted_dsns(postgres.port)
    for name, dsn in dsns.items():
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"db-{name}", "namespace": NAMESPACE},
            "data": {"dsn": base64.b64encode(dsn.encode()).decode()},
        }
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(secret))
    datacenters = ", ".join(
        f"{{name: {name}, databaseSecretRef: {{name: db-{name}}}}}" for name in dsns
    )
    helpers.apply(
        control_plane,
        textwrap.dedent(
            f"""\
            apiVersion: nebula-id.io/v1alpha1
            kind: NebulaIdPool
            metadata: {{name: leaky, namespace: {NAMESPACE}}}
            spec:
              algorithm: segment
              datacenters: [{datacenters}]
              segment: {{tags: [{{name: orders}}]}}
            """
        ),
    )

    def reported() -> dict[str, object] | None:
        pool = helpers.get_json(control_plane, "nip", "leaky", "-n", NAMESPACE)
        health = ((pool or {}).get("status") or {}).get("datacenters") or []
        provisioned = helpers.condition(pool, "DatabaseProvisioned")
        if len(health) == len(dsns) and provisioned.get("status") == "False":
            return dict(pool or {})
        return None

    try:
        pool = helpers.eventually(reported, timeout=60, what="every datacenter reported")
    except AssertionError as e:
        last = helpers.get_json(control_plane, "nip", "leaky", "-n", NAMESPACE)
        raise AssertionError(f"{e}\n{(last or {}).get('status')}\n{operator.log_tail()}") from e
    status_text = json.dumps(pool)
    events = control_plane.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout
    _, metrics = operator.probe("/metrics")
    logs = operator.log_path.read_text()

    for where, text in {
        "status": status_text,
        "events": events,
        "logs": logs,
        "metrics": metrics,
    }.items():
        assert MARK not in text, f"the planted secret leaked into the {where}"

    # The reports still say where and what: the host, and the error's class.
    reasons = {
        dc["name"]: dc.get("reason") or dc.get("message") or ""
        for dc in pool["status"]["datacenters"]
    }
    reasons_text = json.dumps(pool["status"])
    assert "127.0.0.1:1" in reasons_text, reasons
    assert f"127.0.0.1:{postgres.port}" in reasons_text, reasons
    assert "InvalidCatalogNameError" in reasons_text, reasons
    assert "the configured database" in reasons_text, reasons
    assert "Warning" in events
