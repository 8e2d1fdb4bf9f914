"""Reading JSON documents as `object` and narrowing them (`nebula_id.core.jsontypes`)."""

from __future__ import annotations

import json

import pytest

from nebula_id.core import jsontypes
from nebula_id_operator import injection, status


def test_as_object_and_as_list_narrow_or_give_none() -> None:
    doc: object = json.loads('{"a": [1, {"b": 2}, "x"], "n": null}')
    found = jsontypes.as_object(doc)
    assert found is not None
    assert jsontypes.as_list(found["a"]) == [1, {"b": 2}, "x"]
    assert jsontypes.as_objects(found["a"]) == [{"b": 2}]
    assert jsontypes.as_object(found["a"]) is None
    assert jsontypes.as_list(found["n"]) is None
    assert jsontypes.as_objects(found["n"]) == []


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 7), (3, 3), ("42", 42), (2.0, 2), (True, 1)]
)
def test_as_int_takes_numbers_and_numeric_strings(value: object, expected: int) -> None:
    assert jsontypes.as_int(value, 7) == expected


@pytest.mark.parametrize("value", [[1], {"a": 1}, "ten"])
def test_as_int_refuses_what_int_cannot_read(value: object) -> None:
    with pytest.raises(ValueError, match=r"integer|invalid literal"):
        jsontypes.as_int(value)


def test_as_number() -> None:
    assert jsontypes.as_number(None) == 0.0
    assert jsontypes.as_number("1.5") == 1.5
    with pytest.raises(ValueError, match="expected a number"):
        jsontypes.as_number([1.5])


def test_copy_is_shallow_and_independent() -> None:
    original: dict[str, object] = {"a": 1, "nested": {"b": 2}}
    copied = jsontypes.copy(original)
    copied["a"] = 2
    assert original["a"] == 1
    assert copied["nested"] is original["nested"]


def test_status_ignores_rows_that_are_not_objects() -> None:
    previous: dict[str, object] = {
        "conditions": ["junk", {"type": status.READY, "status": "True"}],
        "datacenters": [7, {"name": "a", "healthy": True, "consecutiveFailures": "2"}],
        "observedGeneration": 3,
    }
    assert status.is_ready(previous, 3)
    [health] = status.health_from_status(previous)
    assert (health.name, health.healthy, health.consecutive_failures) == ("a", True, 2)


def test_apply_refuses_a_path_through_a_plain_value() -> None:
    pod: dict[str, object] = {"spec": "not an object"}
    op: injection.PatchOperation = {"op": "add", "path": "/spec/volumes", "value": []}
    with pytest.raises(ValueError, match="ends inside a value"):
        injection.apply(pod, [op])
