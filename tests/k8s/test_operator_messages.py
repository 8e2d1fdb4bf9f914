"""What `kubectl describe nip` and `kubectl get events` tell a newcomer when a
pool is not Ready: what is wrong and what to do next, for the two most common
mistakes (the database Secret is missing, the database cannot be reached).

A real operator process against the real kube-apiserver, etcd and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import textwrap
from typing import Any

from tests.k8s import operator_helpers as helpers
from tests.support import processes
from tests.support.controlplane import ControlPlane

NAMESPACE = "messages-tests"
PREFIX = "/nebula-id-messages-tests"


operator = helpers.module_operator(namespace=NAMESPACE, prefix=PREFIX, identity="messages")


def apply_segment_pool(plane: ControlPlane, name: str, secret: str) -> None:
    helpers.apply(
        plane,
        textwrap.dedent(
            f"""\
            apiVersion: nebula-id.io/v1alpha1
            kind: NebulaIdPool
            metadata: {{name: {name}, namespace: {NAMESPACE}}}
            spec:
              algorithm: segment
              datacenters: [{{name: dc-a, databaseSecretRef: {{name: {secret}}}}}]
              segment: {{tags: [{{name: orders}}]}}
            """
        ),
    )


def not_ready(plane: ControlPlane, op: helpers.Operator, name: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = helpers.get_json(plane, "nip", name, "-n", NAMESPACE)
        return found if helpers.condition(found, "Ready").get("status") == "False" else None

    try:
        return helpers.eventually(probe, timeout=30, what=f"{name} Ready=False")
    except AssertionError as e:
        raise AssertionError(f"{e}\noperator log:\n{op.log_tail()}") from e


def warning_events(plane: ControlPlane, name: str, reason: str) -> list[dict[str, Any]]:
    out = plane.kubectl(
        "get", "events", "-n", NAMESPACE, "-o", "json",
        f"--field-selector=involvedObject.name={name},type=Warning",
    ).stdout  # fmt: skip
    return [e for e in json.loads(out)["items"] if e["reason"] == reason]


def describe(plane: ControlPlane, name: str) -> str:
    return " ".join(plane.kubectl("describe", "nip", name, "-n", NAMESPACE).stdout.split())


def test_a_missing_secret_says_which_secret_and_how_to_create_it(
    control_plane: ControlPlane, operator: helpers.Operator
) -> None:
    apply_segment_pool(control_plane, "no-secret", "orders-db")
    pool = not_ready(control_plane, operator, "no-secret")
    ready = helpers.condition(pool, "Ready")
    assert ready["reason"] == "SecretNotFound"
    message = ready["message"]
    assert message.startswith("Segment IDs cannot be served: the segment tables are not set up.")
    assert f"Secret {NAMESPACE}/orders-db does not exist" in message
    assert (
        f"kubectl create secret generic orders-db -n {NAMESPACE} "
        "--from-literal=dsn=postgresql://USER:PASSWORD@HOST:5432/DATABASE" in message
    )
    assert pool["status"]["phase"] == "Failed"
    shown = describe(control_plane, "no-secret")
    assert "Reason: SecretNotFound" in shown
    assert f"kubectl create secret generic orders-db -n {NAMESPACE}" in shown
    events = helpers.eventually(
        lambda: warning_events(control_plane, "no-secret", "SecretNotFound"),
        timeout=15,
        what="a SecretNotFound Warning event",
    )
    assert "kubectl create secret generic orders-db" in events[0]["message"]
    wide = control_plane.kubectl("get", "nip", "no-secret", "-n", NAMESPACE, "-o", "wide").stdout
    assert "SecretNotFound" in wide


def test_an_unreachable_database_says_what_to_check(
    control_plane: ControlPlane, operator: helpers.Operator
) -> None:
    port = processes.free_port()  # nothing listens there
    dsn = f"postgresql://app:s3cret-pw@127.0.0.1:{port}/ids"
    control_plane.kubectl(
        "apply", "-f", "-",
        input=json.dumps({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "down-db", "namespace": NAMESPACE},
            "data": {"dsn": base64.b64encode(dsn.encode()).decode()},
        }),
    )  # fmt: skip
    apply_segment_pool(control_plane, "db-down", "down-db")
    pool = not_ready(control_plane, operator, "db-down")
    provisioned = helpers.condition(pool, "DatabaseProvisioned")
    assert provisioned["reason"] == "DatabaseUnavailable"
    message = provisioned["message"]
    assert message.startswith("Datacenter dc-a: ")
    assert f"127.0.0.1:{port}" in message
    assert "s3cret-pw" not in message, "the DSN's password never shows"
    assert "Check that PostgreSQL is running and reachable from the operator's pod" in message
    assert f"Secret {NAMESPACE}/down-db (key 'dsn')" in message
    assert pool["status"]["phase"] == "Pending", "retried: it may heal by itself"
    shown = describe(control_plane, "db-down")
    assert "Reason: DatabaseUnavailable" in shown
    assert "Check that PostgreSQL is running" in shown
    assert "s3cret-pw" not in shown
    events = helpers.eventually(
        lambda: warning_events(control_plane, "db-down", "DatabaseUnavailable"),
        timeout=15,
        what="a DatabaseUnavailable Warning event",
    )
    assert "Check that PostgreSQL is running" in events[0]["message"]
    healthy = helpers.eventually(
        lambda: (
            helpers.condition(
                helpers.get_json(control_plane, "nip", "db-down", "-n", NAMESPACE),
                "DatacentersHealthy",
            ).get("status")
            == "False"
            and helpers.condition(
                helpers.get_json(control_plane, "nip", "db-down", "-n", NAMESPACE),
                "DatacentersHealthy",
            )
        ),
        timeout=30,
        what="DatacentersHealthy=False",
    )
    assert "Check the PostgreSQL of dc-a and its Secret" in healthy["message"]
