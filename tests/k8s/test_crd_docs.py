"""The CRD as users meet it on the real API server: `kubectl explain` answers
for nested fields, `kubectl get nip -o wide` shows the wide columns, and every
file in examples/ passes server-side validation (schema, CEL rules, defaults)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.k8s import operator_helpers
from tests.support.controlplane import ControlPlane

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    operator_helpers.install_crd(control_plane)
    name = f"docs-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("nip.spec.snowflake.sequenceBits", "4096 IDs per millisecond"),
        ("nip.spec.datacenters.databaseSecretRef.key", "holds the DSN"),
        ("nip.spec.sidecar.rateLimit.burst", "Requests the bucket holds"),
        ("nip.status.conditions.message", "what to do next"),
    ],
)
def test_kubectl_explain_answers_for_nested_fields(
    control_plane: ControlPlane, field: str, says: str
) -> None:
    operator_helpers.install_crd(control_plane)
    out = control_plane.kubectl("explain", field).stdout
    assert says in " ".join(out.split()), out


def test_every_example_passes_server_side_validation(
    control_plane: ControlPlane, namespace: str
) -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    kinds = {yaml.safe_load(f.read_text())["kind"] for f in files}
    assert {"NebulaIdPool", "Secret", "Deployment"} <= kinds
    for path in files:
        out = control_plane.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", str(path)
        ).stdout
        assert "(server dry run)" in out, (path.name, out)


def test_a_broken_example_is_refused_by_the_same_check(
    control_plane: ControlPlane, namespace: str
) -> None:
    pool = yaml.safe_load((EXAMPLES / "pool-snowflake.yaml").read_text())
    pool["spec"]["snowflake"]["workerBits"] = 6  # the bits no longer sum to 63
    proc = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        input=yaml.safe_dump(pool), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "must sum to 63" in proc.stderr


def test_kubectl_get_wide_shows_why_a_pool_is_not_ready(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "pool-snowflake.yaml"))
    narrow = control_plane.kubectl("get", "nip", "-n", namespace).stdout.splitlines()[0].split()
    wide = control_plane.kubectl("get", "nip", "-n", namespace, "-o", "wide").stdout
    assert narrow == ["NAME", "ALGORITHM", "READY", "WORKERS", "DATACENTERS", "AGE"]
    assert wide.splitlines()[0].split()[-3:] == ["PHASE", "REASON", "MESSAGE"]
    assert "snowflake" in wide
