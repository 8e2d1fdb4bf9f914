"""The pure rules of holding a worker ID: candidates, stored records, floors."""

from __future__ import annotations

import json
import random

import pytest

from nebula_id.etcd import claims


def test_free_workers_are_listed_lowest_first() -> None:
    assert claims.free_workers({0, 2, 5}, 8) == [1, 3, 4, 6, 7]
    assert claims.free_workers(set(range(4)), 4) == []
    assert claims.free_workers({9}, 4) == [0, 1, 2, 3]


def test_the_first_candidate_is_the_lowest_free_id() -> None:
    rng = random.Random(7)
    assert claims.candidate([3, 4, 9], 0, rng) == 3
    assert claims.candidate([9], 5, rng) == 9


def test_later_candidates_spread_over_a_growing_window() -> None:
    rng = random.Random(1)
    free = list(range(32))
    for attempt in range(1, 6):
        picks = {claims.candidate(free, attempt, rng) for _ in range(400)}
        assert picks == set(range(min(32, 2**attempt)))


def test_worker_of_key() -> None:
    assert claims.worker_of_key("/nebula-id/pools/ns/p/workers/0/17") == 17
    assert claims.worker_of_key("/nebula-id/pools/ns/p/workers/0/x") is None


def test_claim_record_names_the_holder() -> None:
    record = claims.ClaimRecord(
        pod="app-1",
        pod_uid="uid-1",
        namespace="prod",
        host="node-a",
        pid=42,
        lease=0xABC,
        claimed_at_ms=1_750_000_000_000,
    )
    doc = json.loads(record.to_json())
    assert doc["pod"] == "app-1"
    assert doc["podUid"] == "uid-1"
    assert doc["host"] == "node-a"
    assert doc["lease"] == "abc"
    assert doc["claimedAt"].startswith("2025-06-15T")


def test_high_water_mark_round_trip_and_bare_integers() -> None:
    mark = claims.HighWaterMark(ms=1_750_000_000_123, lease=0xFEED)
    assert claims.HighWaterMark.from_json(mark.to_json()) == mark
    assert claims.HighWaterMark.from_json(b"1750000000999") == claims.HighWaterMark(
        ms=1_750_000_000_999
    )


@pytest.mark.parametrize("raw", [b"{}", b'{"ms": "soon"}', b"[1]", b"-5"])
def test_an_unreadable_mark_is_refused_not_guessed(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json errors are ValueErrors too
        claims.HighWaterMark.from_json(raw)


def test_a_new_holder_waits_past_a_foreign_mark() -> None:
    mark = claims.HighWaterMark(ms=5000, lease=0x1)
    assert claims.floor_for_new_holder(None, previous_lease=None, previous_last_ms=None) == 0
    assert claims.floor_for_new_holder(mark, previous_lease=None, previous_last_ms=None) == 5000
    # Our previous lease was a different one: someone else wrote this mark.
    assert claims.floor_for_new_holder(mark, previous_lease=0x2, previous_last_ms=100) == 5000


def test_a_reclaim_of_our_own_worker_waits_only_past_our_own_last_id() -> None:
    mark = claims.HighWaterMark(ms=5000, lease=0x1)
    assert claims.floor_for_new_holder(mark, previous_lease=0x1, previous_last_ms=3000) == 3000
    # A last timestamp above the mark (a mark that went down): the higher one wins.
    assert claims.floor_for_new_holder(mark, previous_lease=0x1, previous_last_ms=6000) == 6000
