"""Each test carries its tier's marker (root conftest.py), so `-m` selects a tier."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collected(marker: str, *paths: str) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"]
    result = subprocess.run(
        [*argv, "-m", marker, *paths],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("sidecar", "operator", "")),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_k8s_marker_selects_exactly_the_k8s_tests() -> None:
    ids = collected("k8s", "tests/unit", "tests/api", "tests/k8s")
    assert len(ids) > 20, ids
    assert all(i.startswith("tests/k8s/") for i in ids), [i for i in ids if "tests/k8s/" not in i]


def test_the_chaos_marker_selects_the_chaos_tier_and_e2e_all_three() -> None:
    chaos = collected("chaos", "e2e")
    assert chaos
    assert all(i.startswith("e2e/chaos/") for i in chaos), chaos
    flow = collected("e2e and not chaos and not node", "e2e")
    assert flow
    assert all(i.startswith("e2e/test_") for i in flow), flow
