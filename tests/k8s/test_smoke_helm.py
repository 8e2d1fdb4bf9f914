"""Smoke test: the real helm lints and renders the project's chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.binaries import REPO_ROOT
from tests.support.controlplane import run_cli

CHART = REPO_ROOT / "helm" / "nebula-id"
# The test etcd is plain http:// without users, which the chart refuses by default.
TEST_VALUES = ("--set", "etcd.allowInsecure=true")


def test_helm_lint_passes_on_the_chart(helm_bin: str) -> None:
    result = run_cli([helm_bin, "lint", str(CHART), *TEST_VALUES], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_helm_template_renders_well_formed_manifests(helm_bin: str, tmp_path: Path) -> None:
    result = run_cli(
        [
            helm_bin,
            "template",
            "smoke",
            str(CHART),
            "--namespace",
            "smoke",
            "--include-crds",
            *TEST_VALUES,
        ],
        check=False,
    )
    assert result.returncode == 0, result.stderr

    documents: list[dict[str, Any]] = [
        d for d in yaml.safe_load_all(result.stdout) if d is not None
    ]
    assert documents, "the chart renders nothing"
    for document in documents:
        assert document.get("apiVersion"), document
        assert document.get("kind"), document
        assert document.get("metadata", {}).get("name"), document
    names = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert ("CustomResourceDefinition", "nebulaidpools.nebula-id.io") in names
