"""The chart templates the CRD from a copy of `crds/nebulaidpools.yaml`; the two must not drift.

The copy lives in the chart's `files/` (not `crds/`, which Helm installs once and
never upgrades); `templates/crds.yaml` renders it.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "nebula-id"


def test_the_charts_crd_is_identical_to_the_source() -> None:
    source = REPO / "crds" / "nebulaidpools.yaml"
    copy = CHART / "files" / "nebulaidpools.yaml"
    assert copy.read_bytes() == source.read_bytes(), (
        "helm/nebula-id/files/nebulaidpools.yaml differs from crds/nebulaidpools.yaml; "
        "copy it: cp crds/nebulaidpools.yaml helm/nebula-id/files/"
    )


def test_the_chart_has_no_crds_dir_that_helm_would_never_upgrade() -> None:
    assert not (CHART / "crds").exists()
    assert sorted(p.name for p in (CHART / "files").iterdir()) == ["nebulaidpools.yaml"]
