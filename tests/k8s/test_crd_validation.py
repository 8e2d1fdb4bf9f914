"""The API server itself rejects invalid NebulaIdPools, with messages people understand.

No operator runs here: everything is the CRD's schema and CEL rules.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator

import pytest

from tests.k8s import operator_helpers as helpers
from tests.support.controlplane import ControlPlane

NAMESPACE = "crd-tests"


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    helpers.install_crd(control_plane)
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    yield control_plane
    # No operator runs here, so no finalizers: leave no pools for other tests' operators.
    control_plane.kubectl("delete", "nip", "--all", "-n", NAMESPACE, "--timeout=60s")


def pool(name: str, spec: str) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: nebula-id.io/v1alpha1
        kind: NebulaIdPool
        metadata: {{name: {name}, namespace: {NAMESPACE}}}
        spec:
        """
    ) + textwrap.indent(textwrap.dedent(spec), "  ")


INVALID_ON_CREATE = {
    "bits-do-not-sum-to-63": (
        "snowflake: {timestampBits: 42}",
        "must sum to 63",
    ),
    "too-few-bits": (
        "snowflake: {timestampBits: 40, sequenceBits: 12, workerBits: 5, datacenterBits: 5}",
        "must sum to 63",
    ),
    "duplicate-datacenter-names": (
        "datacenters: [{name: dc-a}, {name: dc-a}]",
        "datacenter names must be unique",
    ),
    "duplicate-datacenter-ids": (
        "datacenters: [{name: dc-a, id: 1}, {name: dc-b, id: 1}]",
        "datacenter ids must be unique",
    ),
    "datacenter-id-does-not-fit": (
        "snowflake: {timestampBits: 45, datacenterBits: 1}\ndatacenters: [{name: dc-a, id: 2}]",
        "must fit in spec.snowflake.datacenterBits",
    ),
    "more-datacenters-than-bits-allow": (
        "snowflake: {timestampBits: 46, datacenterBits: 0}\n"
        "datacenters: [{name: dc-a}, {name: dc-b}]",
        "more datacenters than spec.snowflake.datacenterBits",
    ),
    "step-above-max-step": (
        "datacenters: [{name: dc-a, databaseSecretRef: {name: db}}]\n"
        "segment: {tags: [{name: orders, step: 5000, maxStep: 100}]}",
        "step must not exceed its maxStep",
    ),
    "duplicate-tags": (
        "datacenters: [{name: dc-a, databaseSecretRef: {name: db}}]\n"
        "segment: {tags: [{name: orders}, {name: orders}]}",
        "segment tag names must be unique",
    ),
    "invalid-tag-name": (
        "datacenters: [{name: dc-a, databaseSecretRef: {name: db}}]\n"
        "segment: {tags: [{name: Orders!}]}",
        "a tag name must be 1-63 lowercase letters",
    ),
    "invalid-datacenter-name": (
        "datacenters: [{name: DC_A}]",
        "a datacenter name must be a DNS label",
    ),
    "segment-pool-without-tags": (
        "algorithm: segment\ndatacenters: [{name: dc-a, databaseSecretRef: {name: db}}]",
        "a segment pool needs at least one tag",
    ),
    "tags-without-database": (
        "datacenters: [{name: dc-a}]\nsegment: {tags: [{name: orders}]}",
        "give every datacenter in spec.datacenters a databaseSecretRef",
    ),
    "epoch-not-rfc3339": (
        "snowflake: {epoch: yesterday}",
        "epoch must be an RFC 3339 timestamp",
    ),
    "unknown-algorithm": (
        "algorithm: random",
        'supported values: "snowflake", "segment", "uuid7", "uuid4"',
    ),
    "lease-ttl-too-short": (
        "lease: {ttlSeconds: 1}",
        "should be greater than or equal to 2",
    ),
    "health-age-below-two-probes": (
        "failover: {probeIntervalSeconds: 5, healthMaxAgeSeconds: 6}",
        "healthMaxAgeSeconds must be at least twice probeIntervalSeconds",
    ),
    "failure-threshold-zero": (
        "failover: {failureThreshold: 0}",
        "should be greater than or equal to 1",
    ),
    "datacenter-failover-unknown-field": (
        "datacenters: [{name: dc-a, failover: {probeIntervalSeconds: 1}}]",
        'unknown field "spec.datacenters[0].failover.probeIntervalSeconds"',
    ),
    "negative-previous-max-id": (
        "snowflake: {previousMaxId: -5}",
        "previousMaxId must be a non-negative integer",
    ),
    "previous-max-id-not-a-number": (
        'snowflake: {previousMaxId: "12e3"}',
        "previousMaxId must be a non-negative integer",
    ),
    "previous-stopped-at-not-a-time": (
        'snowflake: {previousStoppedAt: "last tuesday"}',
        "previousStoppedAt must be an RFC 3339 timestamp",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_ON_CREATE))
def test_invalid_pool_is_rejected_with_a_readable_message(plane: ControlPlane, case: str) -> None:
    spec, message = INVALID_ON_CREATE[case]
    proc = helpers.apply(plane, pool(f"bad-{case}", spec), check=False)
    assert proc.returncode != 0, f"{case} was accepted"
    assert message in proc.stderr, proc.stderr
    assert helpers.get_json(plane, "nip", f"bad-{case}", "-n", NAMESPACE) is None


def test_valid_pool_gets_every_default(plane: ControlPlane) -> None:
    helpers.apply(plane, pool("defaults", "datacenters: [{name: dc-a}]"))
    spec = helpers.get_json(plane, "nip", "defaults", "-n", NAMESPACE)["spec"]
    assert spec["algorithm"] == "snowflake"
    assert spec["snowflake"] == {
        "epoch": "2024-01-01T00:00:00Z",
        "timestampBits": 41,
        "datacenterBits": 5,
        "workerBits": 5,
        "sequenceBits": 12,
        "clockBackwardToleranceMs": 5,
    }
    assert spec["lease"] == {"ttlSeconds": 10}
    assert spec["sidecar"] == {"port": 8080, "maxBatchSize": 1000}


def test_a_previous_generator_is_accepted_as_integer_string_or_time(plane: ControlPlane) -> None:
    big = str((1 << 62) + 12345)  # beyond 2^53: exact only as a string in JSON clients
    for name, field in (
        ("previous-int", "previousMaxId: 123456789"),
        ("previous-str", f'previousMaxId: "{big}"'),
        ("previous-time", 'previousStoppedAt: "2025-06-01T12:00:00.250Z"'),
    ):
        helpers.apply(plane, pool(name, f"snowflake: {{{field}}}\ndatacenters: [{{name: dc-a}}]"))
        stored = helpers.get_json(plane, "nip", name, "-n", NAMESPACE)["spec"]["snowflake"]
        key, _, value = field.partition(": ")
        assert str(stored[key]) == value.strip('"')


BASE = """\
snowflake: {epoch: "2025-01-01T00:00:00Z"}
datacenters: [{name: dc-a, id: 1}, {name: dc-b, id: 2}]
"""

INVALID_UPDATES = {
    "layout-change": (
        'snowflake: {epoch: "2025-01-01T00:00:00Z", timestampBits: 40, workerBits: 6}\n'
        "datacenters: [{name: dc-a, id: 1}, {name: dc-b, id: 2}]",
        "the Snowflake layout (timestampBits, datacenterBits, workerBits, sequenceBits) "
        "cannot change once the pool exists",
    ),
    "epoch-change": (
        'snowflake: {epoch: "2025-06-01T00:00:00Z"}\n'
        "datacenters: [{name: dc-a, id: 1}, {name: dc-b, id: 2}]",
        "spec.snowflake.epoch cannot change once the pool exists",
    ),
    "datacenter-id-change": (
        'snowflake: {epoch: "2025-01-01T00:00:00Z"}\n'
        "datacenters: [{name: dc-a, id: 3}, {name: dc-b, id: 2}]",
        "a datacenter's id cannot change or be removed once it is set",
    ),
    "datacenter-id-reused-for-another-name": (
        'snowflake: {epoch: "2025-01-01T00:00:00Z"}\n'
        "datacenters: [{name: dc-a, id: 1}, {name: dc-c, id: 2}]",
        "a datacenter ID cannot be reused for a different datacenter name",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_UPDATES))
def test_unsafe_update_is_rejected(plane: ControlPlane, case: str) -> None:
    name = f"upd-{case}"
    helpers.apply(plane, pool(name, BASE))
    spec, message = INVALID_UPDATES[case]
    proc = helpers.apply(plane, pool(name, spec), check=False)
    assert proc.returncode != 0, f"{case} was accepted"
    assert message in proc.stderr, proc.stderr
    stored = helpers.get_json(plane, "nip", name, "-n", NAMESPACE)["spec"]
    assert stored["snowflake"]["epoch"] == "2025-01-01T00:00:00Z"
    assert stored["datacenters"] == [{"name": "dc-a", "id": 1}, {"name": "dc-b", "id": 2}]


def test_safe_update_is_accepted(plane: ControlPlane) -> None:
    helpers.apply(plane, pool("upd-safe", BASE))
    spec = (
        'snowflake: {epoch: "2025-01-01T00:00:00Z", clockBackwardToleranceMs: 20}\n'
        "datacenters: [{name: dc-a, id: 1}, {name: dc-b, id: 2}, {name: dc-c}]\n"
        "lease: {ttlSeconds: 15}"
    )
    helpers.apply(plane, pool("upd-safe", spec))
    stored = helpers.get_json(plane, "nip", "upd-safe", "-n", NAMESPACE)["spec"]
    assert stored["snowflake"]["clockBackwardToleranceMs"] == 20
    assert [dc["name"] for dc in stored["datacenters"]] == ["dc-a", "dc-b", "dc-c"]


def test_retired_datacenter_id_cannot_come_back(plane: ControlPlane) -> None:
    """status.retiredDatacenterIds (written by the operator) guards IDs across generations."""
    helpers.apply(plane, pool("retired", "datacenters: [{name: dc-a, id: 1}]"))
    plane.kubectl(
        "patch",
        "nip",
        "retired",
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"retiredDatacenterIds": [4]}}),
    )
    proc = helpers.apply(
        plane,
        pool("retired", "datacenters: [{name: dc-a, id: 1}, {name: dc-z, id: 4}]"),
        check=False,
    )
    assert proc.returncode != 0
    assert "belonged to a removed datacenter cannot be reused" in proc.stderr, proc.stderr


def test_short_name_and_printer_columns(plane: ControlPlane) -> None:
    helpers.apply(plane, pool("columns", "algorithm: uuid7"))
    out = plane.kubectl("get", "nip", "columns", "-n", NAMESPACE).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "ALGORITHM", "READY", "WORKERS", "DATACENTERS", "AGE"]
    assert out.splitlines()[1].split()[:2] == ["columns", "uuid7"]
