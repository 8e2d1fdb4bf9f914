"""Root conftest: registers the shared fixtures over the real test services, and
marks every test with its tier (the directory it lives in), so that
``pytest -m k8s`` or ``-m "not chaos"`` selects by tier."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

ROOT = Path(__file__).resolve().parent

# Directory (relative to the repository) -> tier marker, most specific first.
# Everything under e2e/ is also marked e2e (the whole flow); `-m "e2e and not
# chaos and not node"` is the e2e tier alone.
TIERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("tests", "models"), "models"),
    (("tests", "unit"), "unit"),
    (("tests", "api"), "api"),
    (("tests", "integration"), "integration"),
    (("tests", "k8s"), "k8s"),
    (("e2e", "chaos"), "chaos"),
    (("e2e", "node"), "node"),
    (("e2e",), "e2e"),
)


def tier_of(path: Path) -> str | None:
    try:
        parts = path.resolve().relative_to(ROOT).parts
    except ValueError:
        return None
    for prefix, marker in TIERS:
        if parts[: len(prefix)] == prefix:
            return marker
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(tier)
        if tier in ("chaos", "node"):
            item.add_marker("e2e")
