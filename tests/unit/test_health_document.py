"""The health document both sides share: built by the operator, parsed and judged by a sidecar."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nebula_id import errors
from nebula_id.core import health

NOW_MS = 1_750_000_000_000  # 2025-06-15T15:06:40Z
NOW = "2025-06-15T15:06:40Z"
EARLIER = "2025-06-15T15:06:30Z"


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    healthy: bool
    reason: str
    checked_at: str


CHECKS = [Check("dc-a", True, "ok", EARLIER), Check("dc-b", False, "connection refused", NOW)]


def test_build_writes_the_documented_shape() -> None:
    assert health.build(CHECKS, updated_at=NOW) == {
        "datacenters": {
            "dc-a": {"healthy": True, "reason": "ok", "checkedAt": EARLIER},
            "dc-b": {"healthy": False, "reason": "connection refused", "checkedAt": NOW},
        },
        "updatedAt": NOW,
    }


def test_a_built_document_parses_back_unchanged_through_json() -> None:
    built = health.build(CHECKS, updated_at=NOW)
    assert health.parse(json.loads(json.dumps(built))) == built
    assert health.parse(health.build([], updated_at=NOW)) == {"datacenters": {}, "updatedAt": NOW}


def test_a_built_document_is_believed_while_fresh() -> None:
    built = json.loads(json.dumps(health.build(CHECKS, updated_at=NOW)))
    assert health.judge(built, now_ms=NOW_MS, max_age_s=60) == {
        "dc-a": (True, "ok"),
        "dc-b": (False, "connection refused"),
    }
    # dc-a was checked 10 s before the document was written.
    assert health.judge(built, now_ms=NOW_MS + 55_000, max_age_s=60) == {
        "dc-a": None,
        "dc-b": (False, "connection refused"),
    }
    assert health.judge(built, now_ms=NOW_MS + 61_000, max_age_s=60) == {}


def test_parse_fills_the_optional_fields() -> None:
    parsed = health.parse({"datacenters": {"dc-a": {"healthy": True}}, "updatedAt": NOW})
    assert parsed["datacenters"]["dc-a"] == {"healthy": True, "reason": "", "checkedAt": NOW}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("nonsense", "must be a JSON object, got str"),
        ([], "must be a JSON object, got list"),
        ({"datacenters": {}}, "updatedAt must be an RFC 3339 time with a zone, got None"),
        (
            {"datacenters": {}, "updatedAt": "2025-06-15T15:06:40"},
            "updatedAt must be an RFC 3339 time with a zone",
        ),
        ({"datacenters": {}, "updatedAt": "yesterday"}, "updatedAt must be an RFC 3339 time"),
        ({"updatedAt": NOW}, "datacenters must be an object by name, got None"),
        ({"datacenters": ["dc-a"], "updatedAt": NOW}, "datacenters must be an object by name"),
        (
            {"datacenters": {"dc-a": True}, "updatedAt": NOW},
            "datacenters['dc-a'] must be an object, got True",
        ),
        (
            {"datacenters": {"dc-a": {"healthy": "yes"}}, "updatedAt": NOW},
            "datacenters['dc-a'].healthy must be true or false, got 'yes'",
        ),
        (
            {"datacenters": {"dc-a": {"reason": "ok"}}, "updatedAt": NOW},
            "datacenters['dc-a'].healthy must be true or false, got None",
        ),
        (
            {"datacenters": {"dc-a": {"healthy": True, "reason": 7}}, "updatedAt": NOW},
            "datacenters['dc-a'].reason must be a string, got 7",
        ),
        (
            {"datacenters": {"dc-a": {"healthy": True, "checkedAt": 5}}, "updatedAt": NOW},
            "datacenters['dc-a'].checkedAt must be an RFC 3339 time with a zone, got 5",
        ),
    ],
)
def test_a_bad_document_names_its_fault(raw: object, message: str) -> None:
    with pytest.raises(health.InvalidHealthDocument) as raised:
        health.parse(raw)
    assert isinstance(raised.value, errors.InvalidArgument)
    assert str(raised.value).startswith("health document: ")
    assert message in str(raised.value)


def test_judge_keeps_the_good_entries_of_a_partly_bad_document() -> None:
    raw = {
        "datacenters": {"dc-a": {"healthy": "yes"}, "dc-b": {"healthy": False, "reason": "down"}},
        "updatedAt": NOW,
    }
    with pytest.raises(health.InvalidHealthDocument):
        health.parse(raw)
    assert health.judge(raw, now_ms=NOW_MS, max_age_s=60) == {"dc-a": None, "dc-b": (False, "down")}


def test_rfc3339_needs_a_zone() -> None:
    assert health.rfc3339_ms("2025-06-15T15:06:40Z") == NOW_MS
    assert health.rfc3339_ms("2025-06-15T17:06:40.000+02:00") == NOW_MS
    assert health.rfc3339_ms("2025-06-15T15:06:40") is None
    assert health.rfc3339_ms("soon") is None
