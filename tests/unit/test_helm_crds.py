"""The chart ships the CRD as a copy of `crds/nebulaidpools.yaml`; the two must not drift."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_charts_crd_is_identical_to_the_source() -> None:
    source = REPO / "crds" / "nebulaidpools.yaml"
    copy = REPO / "helm" / "nebula-id" / "crds" / "nebulaidpools.yaml"
    assert copy.read_bytes() == source.read_bytes(), (
        "helm/nebula-id/crds/nebulaidpools.yaml differs from crds/nebulaidpools.yaml; "
        "copy it: cp crds/nebulaidpools.yaml helm/nebula-id/crds/"
    )


def test_the_chart_holds_no_other_crd() -> None:
    crds = sorted(p.name for p in (REPO / "helm" / "nebula-id" / "crds").iterdir())
    assert crds == ["nebulaidpools.yaml"]
