"""The leased Snowflake source: its states, refusals, fence and metrics, on a fake clock."""

from __future__ import annotations

import prometheus_client
import pytest

from nebula_id import clock as clocks
from nebula_id import errors
from nebula_id.core import layout as layouts
from nebula_id.etcd import source as sources


def make(
    clock: clocks.FakeClock,
) -> tuple[sources.LeasedSnowflake, prometheus_client.CollectorRegistry]:
    registry = prometheus_client.CollectorRegistry()
    source = sources.LeasedSnowflake(
        layout=layouts.SnowflakeLayout(),
        pool_ref="ns/pool",
        datacenter_name="dc-a",
        datacenter_id=3,
        clock=clock,
        metrics=sources.WorkerMetrics(registry),
    )
    return source, registry


def metric(registry: prometheus_client.CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


def start(source: sources.LeasedSnowflake, clock: clocks.FakeClock, **overrides: int) -> None:
    now = clock.wall_ms()
    args = {
        "worker": 7,
        "lease_id": 0xAB,
        "tolerance_ms": 5,
        "wait_past_ms": now - 10,
        "mark_ms": now + 12_500,
    }
    args.update(overrides)
    source.start(**args, lease_deadline=clock.monotonic() + 8)


def test_before_a_claim_it_is_not_ready_and_refuses() -> None:
    clock = clocks.FakeClock()
    source, registry = make(clock)
    assert source.ready_reason() == "not_ready"
    with pytest.raises(errors.NotReady):
        source.next_id()
    assert source.info()["worker"] is None
    assert metric(registry, "nebula_id_worker_id") == -1


def test_a_claimed_worker_serves_ids_with_its_node_bits() -> None:
    clock = clocks.FakeClock()
    source, registry = make(clock)
    start(source, clock)
    assert source.ready_reason() is None
    first, *rest = source.next_ids(3)
    parsed = source.layout.parse(first)
    assert (parsed.datacenter, parsed.worker) == (3, 7)
    assert rest == [first + 1, first + 2]
    assert source.next_id() > rest[-1]
    info = source.info()
    assert info["worker"] == 7
    assert info["state"] == "serving"
    assert info["lease"]["id"] == "ab"
    assert info["lease"]["deadlineInSeconds"] == 8
    assert metric(registry, "nebula_id_worker_id") == 7


def test_past_the_lease_deadline_it_refuses_with_lease_lost_and_counts() -> None:
    clock = clocks.FakeClock()
    source, registry = make(clock)
    start(source, clock)
    source.next_id()
    clock.advance(8.0)
    assert source.ready_reason() == "lease_lost"
    with pytest.raises(errors.LeaseLost):
        source.next_id()
    with pytest.raises(errors.LeaseLost):
        source.next_ids(5)
    assert metric(registry, "nebula_id_snowflake_fence_refusals_total") == 2


def test_extend_moves_the_deadline_and_the_mark() -> None:
    clock = clocks.FakeClock()
    source, _ = make(clock)
    start(source, clock, mark_ms=clock.wall_ms() + 1000)
    clock.advance(5.0)
    source.extend(mark_ms=clock.wall_ms() + 10_000, lease_deadline=clock.monotonic() + 8)
    clock.advance(5.0)  # past the first deadline and the first mark
    assert source.ready_reason() is None
    assert source.next_id() > 0


def test_it_waits_past_the_previous_mark() -> None:
    clock = clocks.FakeClock()
    source, _ = make(clock)
    start(source, clock, wait_past_ms=clock.wall_ms() + 300)
    assert source.ready_reason() == "not_ready"
    with pytest.raises(errors.NotReady):
        source.next_id()
    clock.advance(0.301)
    first = source.next_id()
    assert source.layout.parse(first).timestamp_ms > clock.wall_ms() - 1


def test_exhausted_and_lost_states_name_their_reason() -> None:
    clock = clocks.FakeClock()
    source, registry = make(clock)
    source.set_state(sources.EXHAUSTED, "all 4 worker IDs are held")
    assert source.ready_reason() == "worker_ids_exhausted"
    with pytest.raises(errors.WorkerIdsExhausted, match="all 4 worker IDs"):
        source.next_id()
    assert metric(registry, "nebula_id_worker_ids_exhausted") == 1

    start(source, clock)
    assert metric(registry, "nebula_id_worker_ids_exhausted") == 0
    retired = source.stop(sources.LEASE_LOST, "lease expired")
    assert retired is not None
    assert source.ready_reason() == "lease_lost"
    with pytest.raises(errors.LeaseLost, match="lease expired"):
        source.next_id()
    # The retired generator is fenced too, even if someone kept a reference.
    with pytest.raises(errors.LeaseLost):
        retired.next_id()


def test_a_clock_rollback_beyond_tolerance_is_refused_and_counted() -> None:
    clock = clocks.FakeClock()
    source, registry = make(clock)
    start(source, clock)
    clock.advance(2.0)
    source.next_id()
    clock.set_wall_ms(clock.wall_ms() - 1000)
    with pytest.raises(errors.ClockMovedBackward):
        source.next_id()
    assert metric(registry, "nebula_id_snowflake_clock_refusals_total") == 1
