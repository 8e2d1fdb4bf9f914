"""The layering of STYLE.md, enforced: the pure core imports no I/O framework.

kopf keeps its layers with an import-linter contract; this is the same idea
without another dependency: parse every module's imports and check them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "sidecar" / "nebula_id" / "core"
IO_FRAMEWORKS = {"aiohttp", "asyncpg", "kopf", "kubernetes", "prometheus_client", "sqlite3", "yaml"}
PURE_MODULES = sorted(CORE.glob("*.py"))


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_core_has_modules_to_check() -> None:
    assert {p.name for p in PURE_MODULES} >= {"layout.py", "snowflake.py", "segment.py", "pool.py"}


@pytest.mark.parametrize("path", PURE_MODULES, ids=lambda p: p.name)
def test_core_modules_import_no_io_framework(path: Path) -> None:
    assert not imported_roots(path) & IO_FRAMEWORKS


@pytest.mark.parametrize("path", PURE_MODULES, ids=lambda p: p.name)
def test_core_modules_import_no_adapter_of_ours(path: Path) -> None:
    tree = ast.parse(path.read_text())
    ours = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nebula_id")
    }
    allowed = {"nebula_id", "nebula_id.core", "nebula_id.errors", "nebula_id.clock"}
    assert ours <= allowed | {m for m in ours if m.startswith("nebula_id.core.")}


def test_no_importable_package_is_named_operator() -> None:
    for source_root in (ROOT / "sidecar", ROOT / "operator"):
        assert not (source_root / "operator").exists()
        assert not (source_root / "operator.py").exists()
    assert not (ROOT / "operator" / "__init__.py").exists()
