"""The names in `nebula_id.core.crd` are the ones the CRD manifest declares.

Every Python module takes the custom resource's coordinates and the
annotation names from `core.crd`; the manifest is written by hand, so this
keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from nebula_id.core import crd

MANIFEST = Path(__file__).resolve().parents[2] / "crds" / "nebulaidpools.yaml"


def test_the_constants_match_the_manifest() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    spec = manifest["spec"]
    assert manifest["metadata"]["name"] == crd.CRD_NAME
    assert spec["group"] == crd.GROUP
    assert spec["names"]["kind"] == crd.KIND
    assert spec["names"]["listKind"] == crd.LIST_KIND
    assert spec["names"]["plural"] == crd.PLURAL
    assert spec["names"]["singular"] == crd.SINGULAR
    assert tuple(spec["names"]["shortNames"]) == crd.SHORT_NAMES
    served = [v["name"] for v in spec["versions"] if v["served"] and v["storage"]]
    assert served == [crd.VERSION]
    assert f"{spec['group']}/{served[0]}" == crd.API_VERSION


def test_labels_and_annotations_live_in_the_group() -> None:
    names = [
        crd.INJECT_LABEL,
        crd.POOL_ANNOTATION,
        crd.WORKER_ANNOTATION,
        crd.DROP_DATA_ANNOTATION,
        crd.FINALIZER,
    ]
    assert all(name.startswith(f"{crd.GROUP}/") for name in names)
    assert len(set(names)) == len(names)
