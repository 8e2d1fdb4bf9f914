"""A pool that replaces a Snowflake generator: every new ID is above the old ones, or refused."""

from __future__ import annotations

import pytest

from nebula_id import errors
from nebula_id.clock import FakeClock
from nebula_id.core import handover, poolspec
from nebula_id.core import pool as pools
from nebula_id.core.layout import SnowflakeLayout, format_epoch
from nebula_id.core.snowflake import SnowflakeGenerator

NOW_MS = 1_780_000_000_000
LAYOUT = SnowflakeLayout()


def parse(snowflake: dict[str, object], *, now_ms: int | None = NOW_MS) -> pools.PoolConfig:
    return poolspec.parse_spec(
        {"snowflake": snowflake, "datacenters": [{"name": "dc-a"}]},
        namespace="ns",
        name="p",
        now_ms=now_ms,
    )


def highest(timestamp_ms: int) -> int:
    """The largest ID any node of the default layout can issue in that millisecond."""
    return LAYOUT.compose(
        timestamp_ms=timestamp_ms,
        datacenter=LAYOUT.max_datacenter,
        worker=LAYOUT.max_worker,
        sequence=LAYOUT.max_sequence,
    )


def test_a_pool_without_a_previous_generator_has_no_constraint() -> None:
    config = parse({})
    assert config.previous_snowflake is None
    assert config.snowflake_issue_after_ms is None
    assert "previousMaxId" not in config.to_json()["snowflake"]


def test_previous_max_id_becomes_its_timestamp_and_round_trips() -> None:
    old = highest(NOW_MS + 3000)
    config = parse({"previousMaxId": str(old)})  # a decimal string, as JS clients send it
    assert config.snowflake_issue_after_ms == NOW_MS + 3000
    assert poolspec.from_json(config.to_json()) == config
    assert config.to_json()["snowflake"]["previousMaxId"] == old


def test_previous_stopped_at_and_the_later_of_both_wins() -> None:
    stopped = format_epoch(NOW_MS + 5000)
    config = parse({"previousStoppedAt": stopped, "previousMaxId": highest(NOW_MS)})
    assert config.snowflake_issue_after_ms == NOW_MS + 5000
    assert config.to_json()["snowflake"]["previousStoppedAt"] == stopped
    assert poolspec.from_json(config.to_json()) == config


def test_a_layout_that_can_never_get_above_is_refused() -> None:
    with pytest.raises(errors.InvalidPool, match="can never issue an ID above") as caught:
        parse({"previousMaxId": (1 << 63) - 1})
    assert "spec.snowflake.previousMaxId" in caught.value.message
    # 30 timestamp bits (12 days) from an epoch a day ago cannot reach 20 days ahead.
    short = {
        "timestampBits": 30,
        "workerBits": 16,
        "epoch": format_epoch(NOW_MS - 86_400_000),
        "previousStoppedAt": format_epoch(NOW_MS + 20 * 86_400_000),
    }
    with pytest.raises(errors.InvalidPool, match=r"previousStoppedAt.*can never"):
        parse(short, now_ms=None)


def test_a_wait_longer_than_the_limit_is_refused_with_an_epoch_that_works() -> None:
    old = highest(NOW_MS + 86_400_000)
    with pytest.raises(errors.InvalidPool, match=r"24\.0 hours from now") as caught:
        parse({"previousMaxId": old})
    assert "an epoch at or before" in caught.value.message
    advised = caught.value.message.rsplit("at or before ", 1)[1].split(" ")[0]
    # That epoch (it must not be after now) puts IDs issued now above the old maximum.
    assert parse({"epoch": advised, "previousMaxId": old}).snowflake_issue_after_ms < NOW_MS
    # Read back later (no `now`), a stored pool is not refused for the wait.
    assert handover.parse({"previousMaxId": old}, LAYOUT, now_ms=None) is not None


@pytest.mark.parametrize("bad", [-1, 1 << 63, "12a", 1.5, True])
def test_previous_max_id_must_be_a_63_bit_integer(bad: object) -> None:
    with pytest.raises(errors.InvalidPool, match="previousMaxId must be an integer"):
        parse({"previousMaxId": bad})


def test_previous_stopped_at_must_be_a_timestamp() -> None:
    with pytest.raises(errors.InvalidPool, match="previousStoppedAt"):
        parse({"previousStoppedAt": "yesterday"})
    with pytest.raises(errors.InvalidPool, match="previousStoppedAt"):
        parse({"previousStoppedAt": 5})


def test_the_generator_waits_then_issues_only_above_the_previous_max() -> None:
    clock = FakeClock(wall_ms=NOW_MS)
    old = highest(NOW_MS + 40)
    config = parse({"previousMaxId": old})
    generator = SnowflakeGenerator(
        config.layout,
        datacenter=0,
        worker=0,
        clock=clock,
        issue_after_ms=config.snowflake_issue_after_ms,
    )
    generator.allow_until(NOW_MS + 10_000)
    with pytest.raises(errors.NotReady, match="generator this pool replaces") as caught:
        generator.next_id()
    assert caught.value.retry_after == pytest.approx(0.041)
    clock.set_wall_ms(NOW_MS + 40)
    with pytest.raises(errors.NotReady, match="1 ms to go"):
        generator.next_ids(10)
    clock.set_wall_ms(NOW_MS + 41)
    ids = generator.next_ids(5000)  # spills into later milliseconds
    # The lowest node (datacenter 0, worker 0, sequence 0) is still above the old highest.
    assert min(ids) > old
    assert ids == sorted(set(ids))
