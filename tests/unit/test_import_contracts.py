"""The layer rules' own checks: the `stdlib_only` contract type breaks on what it should.

The contracts themselves are in pyproject.toml and `lint-imports` checks them in
scripts/test.sh; these tests make sure the project's own contract type (in
tools/importlinter_stdlib.py) fails on a foreign import, including the
`from package import name` form, and passes on a clean package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

CONFIG = """\
[tool.importlinter]
root_packages = ["pkg"]
include_external_packages = true
contract_types = ["stdlib_only: tools.importlinter_stdlib.StdlibOnlyContract"]

[[tool.importlinter.contracts]]
name = "pkg.core is pure"
type = "stdlib_only"
source_modules = ["pkg.core"]
allowed_modules = ["pkg.errors"]
"""


def lint(tmp_path: Path, core_source: str) -> subprocess.CompletedProcess[str]:
    package = tmp_path / "pkg"
    (package / "core").mkdir(parents=True)
    (package / "__init__.py").write_text("VERSION = '1'\n")
    (package / "errors.py").write_text("class Oops(Exception): ...\n")
    (package / "adapter.py").write_text("import json\n")
    (package / "core" / "__init__.py").write_text("")
    (package / "core" / "logic.py").write_text(core_source)
    (tmp_path / "pyproject.toml").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_core_of_stdlib_itself_and_allowed_modules_keeps_the_contract(tmp_path: Path) -> None:
    result = lint(
        tmp_path,
        "import json\nimport datetime as dt\nfrom pkg import errors\nfrom pkg.core import logic\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_each_foreign_import_breaks_the_contract(tmp_path: Path) -> None:
    result = lint(
        tmp_path,
        "import json\nfrom pkg import VERSION\nfrom pkg import adapter\nimport pytest\n",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pkg.core.logic -> pkg (l.2)" in result.stdout
    assert "pkg.core.logic -> pkg.adapter (l.3)" in result.stdout
    assert "pkg.core.logic -> pytest (l.4)" in result.stdout
    assert "-> json" not in result.stdout


def test_no_importable_package_is_named_operator() -> None:
    """`operator` would shadow the standard library's module of that name."""
    for source_root in (ROOT / "sidecar", ROOT / "operator"):
        assert not (source_root / "operator").exists()
        assert not (source_root / "operator.py").exists()
    assert not (ROOT / "operator" / "__init__.py").exists()
