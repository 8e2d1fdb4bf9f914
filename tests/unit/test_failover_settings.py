"""Failover settings: `spec.failover` with per-datacenter overrides, local overrides, reasons."""

from __future__ import annotations

from typing import Any

import pytest

from nebula_id import errors
from nebula_id.clock import FakeClock
from nebula_id.config import serve as serve_settings
from nebula_id.core import failover, poolspec
from nebula_id.core import pool as pools


def parse(spec: dict[str, Any]) -> pools.PoolConfig:
    return poolspec.parse_spec(spec, namespace="shop", name="ids")


def test_defaults_when_the_spec_says_nothing() -> None:
    config = parse({})
    assert config.failover == failover.FailoverSettings()
    assert config.failover.failure_threshold == 3
    assert config.failover.hold_down_s == 30.0
    assert config.failover.recovery_s == 10.0
    assert config.failover.probe_interval_s == 2.0
    assert config.failover.health_max_age_s == 60.0
    assert config.failover_for("default") == config.failover


def test_pool_settings_and_datacenter_overrides_round_trip_through_json() -> None:
    config = parse(
        {
            "failover": {
                "failureThreshold": 2,
                "holdDownSeconds": 1.5,
                "recoverySeconds": 4,
                "probeIntervalSeconds": 0.25,
                "healthMaxAgeSeconds": 5,
            },
            "datacenters": [
                {"name": "dc-a", "id": 1, "failover": {"failureThreshold": 5}},
                {"name": "dc-b", "id": 2},
            ],
        }
    )
    assert config.failover == failover.FailoverSettings(2, 1.5, 4.0, 0.25, 5.0)
    own = config.failover_for("dc-a")
    assert (own.failure_threshold, own.hold_down_s, own.probe_interval_s) == (5, 1.5, 0.25)
    assert config.failover_for("dc-b") == config.failover
    assert poolspec.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"failover": {"failureThreshold": 0}}, "failure_threshold must be 1..100"),
        ({"failover": {"holdDownSeconds": "soon"}}, "holdDownSeconds must be a number"),
        ({"failover": {"probeIntervalSeconds": 0.01}}, "probe_interval_s must be 0.05..300"),
        ({"failover": {"recoverySeconds": -1}}, "recovery_s must be 0..3600"),
        ({"failover": {"healthMaxAgeSeconds": 3}}, "at least twice probeIntervalSeconds"),
        ({"failover": {"typo": 1}}, "spec.failover has no field 'typo'"),
        (
            {"datacenters": [{"name": "a", "failover": {"probeIntervalSeconds": 1}}]},
            "spec.datacenters[0].failover has no field 'probeIntervalSeconds'",
        ),
    ],
)
def test_invalid_failover_settings_name_the_problem(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.InvalidPool, match=message.replace("[", r"\[").replace(".", r"\.")):
        parse(spec)


def test_local_flags_override_the_pool() -> None:
    local = serve_settings.load(
        {"failover_failure_threshold": "1"},
        {"NEBULA_FAILOVER_HOLD_DOWN_SECONDS": "0.5"},
    )
    merged = local.failover.apply(failover.FailoverSettings(failure_threshold=4, recovery_s=7))
    assert merged == failover.FailoverSettings(failure_threshold=1, hold_down_s=0.5, recovery_s=7)
    with pytest.raises(errors.ConfigError, match="NEBULA_FAILOVER_FAILURE_THRESHOLD"):
        serve_settings.load({}, {"NEBULA_FAILOVER_FAILURE_THRESHOLD": "many"})
    with pytest.raises(errors.ConfigError, match=r"failure_threshold must be 1\.\.100"):
        serve_settings.load({}, {"NEBULA_FAILOVER_FAILURE_THRESHOLD": "0"})


def test_the_config_file_has_a_failover_section(tmp_path: Any) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[failover]\nprobe_interval_seconds = 0.5\nhealth_max_age_seconds = 4\n")
    local = serve_settings.load({}, {}, config_file=path)
    merged = local.failover.apply(failover.FailoverSettings())
    assert (merged.probe_interval_s, merged.health_max_age_s) == (0.5, 4.0)


def test_each_datacenter_counts_failures_against_its_own_threshold() -> None:
    clock = FakeClock()
    policy = failover.Failover(
        ["dc-a", "dc-b"],
        preferred="dc-a",
        clock=clock,
        settings=failover.FailoverSettings(failure_threshold=3),
        per_datacenter={"dc-a": failover.FailoverSettings(failure_threshold=1)},
    )
    policy.record_failure("dc-a")
    assert policy.current() == "dc-b"
    assert policy.switch_reason == "failure_threshold"
    assert policy.switched_at_ms == clock.wall_ms()
    policy.record_failure("dc-b")
    policy.record_failure("dc-b")
    assert policy.usable("dc-b")


def test_the_switch_reason_says_published_health_or_recovery() -> None:
    clock = FakeClock()
    policy = failover.Failover(
        ["dc-a", "dc-b"],
        preferred="dc-a",
        clock=clock,
        settings=failover.FailoverSettings(hold_down_s=2),
    )
    policy.observe_health({"dc-a": (False, "down"), "dc-b": (True, "ok")})
    assert policy.current() == "dc-b"
    assert policy.info()["reason"] == "published_unhealthy"
    policy.observe_health({"dc-a": (True, "ok"), "dc-b": (True, "ok")})
    assert policy.current() == "dc-b"  # held down
    clock.advance(2.1)
    assert policy.current() == "dc-a"
    assert policy.info()["reason"] == "preferred_recovered"
    assert policy.switches == 2


def test_new_settings_keep_the_counts_and_apply_the_new_threshold() -> None:
    policy = failover.Failover(
        ["dc-a", "dc-b"],
        preferred="dc-a",
        clock=FakeClock(),
        settings=failover.FailoverSettings(failure_threshold=3),
    )
    policy.record_failure("dc-a")
    policy.record_failure("dc-a")
    assert policy.current() == "dc-a"
    policy.update_settings(
        failover.FailoverSettings(failure_threshold=3),
        {"dc-a": failover.FailoverSettings(failure_threshold=2)},
    )
    assert policy.per_datacenter == {"dc-a": failover.FailoverSettings(failure_threshold=2)}
    assert policy.current() == "dc-b"
    assert policy.switch_reason == "failure_threshold"
