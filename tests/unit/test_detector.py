"""The operator's detector: down after N failed probes, healthy after the recovery window."""

from __future__ import annotations

from nebula_id.clock import FakeClock
from nebula_id.core import pool as pools
from nebula_id.core import poolspec
from nebula_id_operator import detector, status

NOW = "2026-01-01T00:00:00Z"


def config(threshold: int = 3, recovery: float = 5.0) -> pools.PoolConfig:
    return poolspec.parse_spec(
        {
            "failover": {"failureThreshold": threshold, "recoverySeconds": recovery},
            "datacenters": [
                {"name": "dc-a", "id": 1},
                {"name": "dc-b", "id": 2, "failover": {"failureThreshold": 1}},
            ],
        },
        namespace="ns",
        name="pool",
    )


def probe(a: bool, b: bool = True) -> list[status.DatacenterHealth]:
    return [
        status.DatacenterHealth("dc-a", a, "ok" if a else "refused", NOW),
        status.DatacenterHealth("dc-b", b, "ok" if b else "refused", NOW),
    ]


def healthy(judged: list[status.DatacenterHealth]) -> dict[str, bool]:
    return {h.name: h.healthy for h in judged}


def test_unhealthy_only_after_the_threshold_of_consecutive_failures() -> None:
    clock = FakeClock()
    judge = detector.Detector(monotonic=clock.monotonic)
    pool = config(threshold=3)
    assert judge.observe(pool, probe(True)) == (
        [
            status.DatacenterHealth("dc-a", True, "ok", NOW, 0, NOW),
            status.DatacenterHealth("dc-b", True, "ok", NOW, 0, NOW),
        ],
        [],
    )
    judged, flipped = judge.observe(pool, probe(False))
    assert healthy(judged)["dc-a"] is True
    assert flipped == []
    assert judged[0].reason == "1 of 3 failed probes: refused"
    judge.observe(pool, probe(True))  # a success resets the count
    judge.observe(pool, probe(False))
    judge.observe(pool, probe(False))
    judged, flipped = judge.observe(pool, probe(False))
    assert healthy(judged)["dc-a"] is False
    assert flipped == [detector.Transition("dc-a", False, "refused")]
    assert judged[0].consecutive_failures == 3


def test_a_datacenter_override_of_the_threshold_applies_to_it_alone() -> None:
    judge = detector.Detector(monotonic=FakeClock().monotonic)
    judge.observe(config(), probe(True, True))
    judged, flipped = judge.observe(config(), probe(True, False))
    assert healthy(judged) == {"dc-a": True, "dc-b": False}
    assert [t.name for t in flipped] == ["dc-b"]


def test_healthy_again_only_after_the_recovery_window_of_passing_probes() -> None:
    clock = FakeClock()
    judge = detector.Detector(monotonic=clock.monotonic)
    pool = config(threshold=1, recovery=5.0)
    judge.observe(pool, probe(True))
    judge.observe(pool, probe(False))
    judged, _ = judge.observe(pool, probe(True))
    assert healthy(judged)["dc-a"] is False
    assert judged[0].reason.startswith("recovering")
    clock.advance(3)
    judge.observe(pool, probe(False))  # a failure restarts the window
    judge.observe(pool, probe(True))
    clock.advance(4.9)
    assert healthy(judge.observe(pool, probe(True))[0])["dc-a"] is False
    clock.advance(0.2)
    judged, flipped = judge.observe(pool, probe(True))
    assert healthy(judged)["dc-a"] is True
    assert flipped == [detector.Transition("dc-a", True, "ok")]


def test_unhealthy_from_the_first_rounds_is_a_transition() -> None:
    judge = detector.Detector(monotonic=FakeClock().monotonic)
    judged, flipped = judge.observe(config(threshold=1), probe(False))
    assert healthy(judged)["dc-a"] is False
    assert [t.name for t in flipped] == ["dc-a"]
