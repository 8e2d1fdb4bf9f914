"""Comparing what we sent to what the API server stored (it adds defaults)."""

from __future__ import annotations

from typing import Any


def is_subset(expected: Any, actual: Any) -> bool:
    """`expected` is contained in `actual`: dicts by key, lists item by item."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and is_subset(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(is_subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual)
