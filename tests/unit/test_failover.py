"""The pure datacenter choice: leave on failures or published health, return after a hold-down."""

from __future__ import annotations

import pytest

from nebula_id import errors
from nebula_id.clock import FakeClock
from nebula_id.core import health
from nebula_id.core.failover import Failover, FailoverSettings

NOW_MS = 1_750_000_000_000


def make(
    *, threshold: int = 3, hold_down: float = 30.0, preferred: str = "dc-a"
) -> tuple[Failover, FakeClock]:
    clock = FakeClock(wall_ms=NOW_MS)
    policy = Failover(
        ["dc-a", "dc-b", "dc-c"],
        preferred=preferred,
        clock=clock,
        settings=FailoverSettings(failure_threshold=threshold, hold_down_s=hold_down),
    )
    return policy, clock


def test_starts_on_the_preferred_datacenter() -> None:
    policy, _ = make(preferred="dc-b")
    assert policy.current() == "dc-b"
    assert policy.order() == ["dc-b", "dc-a", "dc-c"]
    assert policy.switches == 0


def test_stays_until_the_failure_threshold() -> None:
    policy, _ = make(threshold=3)
    policy.record_failure("dc-a")
    policy.record_failure("dc-a")
    assert policy.current() == "dc-a"
    policy.record_failure("dc-a")
    assert policy.current() == "dc-b"
    assert policy.order() == ["dc-b", "dc-c", "dc-a"]
    assert policy.switches == 1
    assert policy.down() == ["dc-a"]


def test_a_success_resets_the_consecutive_count() -> None:
    policy, _ = make(threshold=2)
    policy.record_failure("dc-a")
    policy.record_success("dc-a")
    policy.record_failure("dc-a")
    assert policy.current() == "dc-a"


def test_returns_only_after_the_hold_down() -> None:
    policy, clock = make(threshold=1, hold_down=30)
    policy.record_failure("dc-a")
    assert policy.current() == "dc-b"
    policy.record_success("dc-a")  # a probe answered
    clock.advance(29)
    assert policy.current() == "dc-b"
    clock.advance(1)
    assert policy.current() == "dc-a"
    assert policy.switches == 2


def test_a_failure_during_the_hold_down_restarts_it() -> None:
    policy, clock = make(threshold=1, hold_down=30)
    policy.record_failure("dc-a")
    policy.current()
    policy.record_success("dc-a")
    clock.advance(20)
    policy.record_failure("dc-a")
    policy.record_success("dc-a")
    clock.advance(20)
    assert policy.current() == "dc-b"
    clock.advance(10)
    assert policy.current() == "dc-a"


def test_moves_on_when_the_fallback_fails_too() -> None:
    policy, _ = make(threshold=1)
    policy.record_failure("dc-a")
    assert policy.current() == "dc-b"
    policy.record_failure("dc-b")
    assert policy.current() == "dc-c"


def test_goes_back_to_a_recovered_preferred_without_hold_down_when_the_fallback_fails() -> None:
    policy, _ = make(threshold=1, hold_down=300)
    policy.record_failure("dc-a")
    assert policy.current() == "dc-b"
    policy.record_success("dc-a")
    policy.record_failure("dc-b")
    policy.record_failure("dc-c")
    assert policy.current() == "dc-a"


def test_when_nothing_is_usable_every_datacenter_is_still_tried() -> None:
    policy, _ = make(threshold=1)
    for name in ("dc-a", "dc-b", "dc-c"):
        policy.record_failure(name)
    assert policy.current() == "dc-a"
    assert sorted(policy.order()) == ["dc-a", "dc-b", "dc-c"]
    assert policy.order()[0] == "dc-a"


def test_published_unhealthy_switches_at_once() -> None:
    policy, _ = make(threshold=100)
    policy.observe_health({"dc-a": (False, "connection refused"), "dc-b": (True, "")})
    assert policy.current() == "dc-b"
    assert policy.info()["datacenters"]["dc-a"]["publishedReason"] == "connection refused"


def test_published_healthy_must_last_the_hold_down() -> None:
    policy, clock = make(hold_down=30)
    policy.observe_health({"dc-a": (False, "down")})
    assert policy.current() == "dc-b"
    clock.advance(100)
    policy.observe_health({"dc-a": (True, "")})
    clock.advance(10)
    assert policy.current() == "dc-b"
    clock.advance(20)
    assert policy.current() == "dc-a"


def test_published_healthy_does_not_override_our_own_failures() -> None:
    policy, clock = make(threshold=1, hold_down=0)
    policy.record_failure("dc-a")
    policy.observe_health({"dc-a": (True, "")})
    clock.advance(1000)
    assert policy.current() == "dc-b"


def test_stale_health_is_forgotten() -> None:
    policy, _ = make()
    policy.observe_health({"dc-a": (False, "down")})
    assert not policy.usable("dc-a")
    policy.observe_health({"dc-a": None})
    assert policy.usable("dc-a")


def test_settings_are_validated() -> None:
    with pytest.raises(errors.ConfigError, match="failure_threshold"):
        FailoverSettings(failure_threshold=0)
    with pytest.raises(errors.ConfigError, match="hold_down_s"):
        FailoverSettings(hold_down_s=-1)
    clock = FakeClock()
    with pytest.raises(errors.ConfigError, match="preferred"):
        Failover(["dc-a"], preferred="dc-x", clock=clock)
    with pytest.raises(errors.ConfigError, match="repeat"):
        Failover(["dc-a", "dc-a"], preferred="dc-a", clock=clock)


def _doc(updated: str, **dcs: object) -> dict[str, object]:
    return {"datacenters": dcs, "updatedAt": updated}


def test_parse_health_reads_fresh_entries() -> None:
    doc = _doc(
        "2025-06-15T15:06:40Z",
        **{
            "dc-a": {"healthy": False, "reason": "timeout", "checkedAt": "2025-06-15T15:06:39Z"},
            "dc-b": {"healthy": True, "checkedAt": "2025-06-15T15:06:40.000+00:00"},
        },
    )
    # NOW_MS is 2025-06-15T15:06:40Z
    parsed = health.judge(doc, now_ms=NOW_MS, max_age_s=60)
    assert parsed == {"dc-a": (False, "timeout"), "dc-b": (True, "")}


def test_parse_health_ignores_stale_or_broken_documents() -> None:
    entry = {"healthy": False, "checkedAt": "2025-06-15T15:00:00Z"}
    assert health.judge(_doc("2025-06-15T15:00:00Z", x=entry), now_ms=NOW_MS, max_age_s=60) == {}
    assert health.judge("nonsense", now_ms=NOW_MS, max_age_s=60) == {}
    assert health.judge(_doc("yesterday"), now_ms=NOW_MS, max_age_s=60) == {}
    fresh_doc_stale_entry = _doc("2025-06-15T15:06:40Z", x=entry)
    assert health.judge(fresh_doc_stale_entry, now_ms=NOW_MS, max_age_s=60) == {"x": None}
    bad_entry = _doc("2025-06-15T15:06:40Z", x={"healthy": "yes"})
    assert health.judge(bad_entry, now_ms=NOW_MS, max_age_s=60) == {"x": None}
