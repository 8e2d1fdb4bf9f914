"""Every field of the NebulaIdPool schema has a description, so that
`kubectl explain nip.spec...` answers for each one, and the printer columns
fit `kubectl get nip` (the long ones only with `-o wide`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CRD = Path(__file__).resolve().parents[2] / "crds" / "nebulaidpools.yaml"


def _version() -> dict[str, Any]:
    (version,) = yaml.safe_load(CRD.read_text())["spec"]["versions"]
    return version  # type: ignore[no-any-return]


def fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property and list item below `schema`, with its `kubectl explain` path."""
    for name, child in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from fields(child, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict):
        yield f"{path}[]", items
        yield from fields(items, f"{path}[]")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from fields(extra, f"{path}{{}}")


def test_the_walk_finds_the_nested_fields() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]
    paths = {path for path, _ in fields(schema, "nip")}
    assert "nip.spec.datacenters[].databaseSecretRef.key" in paths
    assert "nip.status.conditions[].lastTransitionTime" in paths
    assert len(paths) > 60


def test_every_field_has_a_description() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]
    assert schema.get("description")
    missing = [
        path
        for path, node in fields(schema, "nip")
        # The API server forbids anything but the type on metadata; kubectl
        # explain describes it from ObjectMeta.
        if not node.get("description") and path != "nip.metadata"
    ]
    assert missing == [], f"fields without a description (kubectl explain shows nothing): {missing}"


def test_a_field_without_a_description_is_reported() -> None:
    schema = {"properties": {"spec": {"description": "d", "properties": {"x": {"type": "string"}}}}}
    missing = [path for path, node in fields(schema, "nip") if not node.get("description")]
    assert missing == ["nip.spec.x"]


def test_the_printer_columns_fit_a_terminal() -> None:
    columns = _version()["additionalPrinterColumns"]
    assert all(c.get("description") for c in columns), "kubectl explain shows column meanings"
    narrow = [c["name"] for c in columns if c.get("priority", 0) == 0]
    wide = [c["name"] for c in columns if c.get("priority", 0) == 1]
    assert narrow == ["Algorithm", "Ready", "Workers", "Datacenters", "Age"]
    assert wide == ["Phase", "Reason", "Message"]
    assert narrow[-1] == "Age", "Age goes last, as in every built-in kind"
