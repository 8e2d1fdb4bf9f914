"""Pure parts of the worker tracking: parsing claims, counting, annotation plans."""

from __future__ import annotations

import dataclasses
import json

from nebula_id.core import keys as pool_keys
from nebula_id.core import poolspec
from nebula_id_operator import workers

KEYS = pool_keys.PoolKeys("ns", "p")
CONFIG = poolspec.parse_spec(
    {"datacenters": [{"name": "dc-a", "id": 1}, {"name": "dc-b", "id": 2}]},
    namespace="ns",
    name="p",
)


def claim(dc: int, worker: int, pod: str | None, *, lease: int = 7) -> workers.Claim:
    value = json.dumps({"pod": pod, "namespace": "ns", "host": "n1"}).encode()
    parsed = workers.parse_claim(KEYS, KEYS.worker(dc, worker), value, lease=lease, mod_revision=3)
    assert parsed is not None
    return parsed


def test_parse_claim() -> None:
    parsed = claim(2, 5, "app-0")
    assert (parsed.datacenter_id, parsed.worker, parsed.pod, parsed.namespace) == (
        2,
        5,
        "app-0",
        "ns",
    )
    assert (
        workers.parse_claim(KEYS, KEYS.root + "/workers/x/1", b"{}", lease=1, mod_revision=1)
        is None
    )
    garbage = workers.parse_claim(KEYS, KEYS.worker(1, 0), b"not json", lease=1, mod_revision=1)
    assert garbage is not None
    assert garbage.pod is None


def test_count_active_by_datacenter_name() -> None:
    claims = [claim(1, 0, "a"), claim(1, 1, "b"), claim(2, 0, "c"), claim(9, 0, "stray")]
    assert workers.count_active(CONFIG, claims) == {"dc-a": 2, "dc-b": 1}


def test_annotation_plan_sets_changes_and_clears() -> None:
    wanted = workers.desired_annotations(
        CONFIG, [claim(1, 3, "a"), claim(2, 0, "b"), claim(1, 4, None)], pool_namespace="ns"
    )
    assert wanted == {("ns", "a"): "dc-a/3", ("ns", "b"): "dc-b/0"}
    applied = {("ns", "a"): "dc-a/3", ("ns", "b"): "dc-a/1", ("ns", "gone"): "dc-a/2"}
    assert workers.annotation_changes(applied, wanted) == {
        ("ns", "b"): "dc-b/0",
        ("ns", "gone"): None,
    }
    assert workers.annotation_changes(wanted, wanted) == {}


def test_claims_naming_another_namespace_annotate_nothing() -> None:
    foreign = dataclasses.replace(claim(1, 5, "victim"), namespace="kube-system")
    wanted = workers.desired_annotations(CONFIG, [foreign, claim(1, 3, "a")], pool_namespace="ns")
    assert wanted == {("ns", "a"): "dc-a/3"}


def test_stale_claims_are_those_without_a_live_lease() -> None:
    live = claim(1, 0, "a", lease=11)
    dead = claim(1, 1, "b", lease=12)
    unleased = claim(1, 2, "c", lease=0)
    assert workers.stale([live, dead, unleased], {11}) == [dead, unleased]
