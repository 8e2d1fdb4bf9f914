"""`nebula-id pool import`'s plan: one counter per (tag, datacenter), or a refusal naming
everything wrong, before anything is written."""

from __future__ import annotations

import functools

import pytest
from tests.support import pools as support_pools

from nebula_id import errors
from nebula_id.core import pool as pools
from nebula_id.core import segment
from nebula_id.pool_import import plan

BITS = 20
SLICE = 1 << (63 - BITS)


# Two tags (step 1000) under a layout with 20 datacenter bits.
make_pool = functools.partial(
    support_pools.make_pool,
    "p",
    namespace="ns",
    tags=("orders", "users"),
    snowflake={"datacenterBits": BITS, "workerBits": 2, "timestampBits": 36, "sequenceBits": 5},
)


def dsns(pool: pools.PoolConfig) -> dict[str, str]:
    return {dc.name: f"mysql://u@h/{dc.name}" for dc in pool.datacenters}


def test_each_datacenter_gets_the_counter_of_its_own_slice() -> None:
    pool = make_pool(dc_ids=(1, 2))
    steps = plan(pool, {"orders": SLICE + 41, "users": 7}, dsns(pool))
    counters = {(s.tag, s.datacenter.name): s.counter for s in steps}
    assert counters == {
        ("orders", "dc-1"): 42,  # dc-1 starts at SLICE: continue right above SLICE + 41
        ("orders", "dc-2"): 0,  # dc-2 starts at 2 * SLICE, above everything
        ("users", "dc-1"): 0,
        ("users", "dc-2"): 0,
    }
    for s in steps:
        assert s.base + max(s.counter, 1) > s.old_max


def test_a_slice_entirely_below_is_refused_with_everything_else_wrong() -> None:
    pool = make_pool(dc_ids=(0, 1))
    with pytest.raises(errors.InvalidPool) as caught:
        plan(pool, {"orders": SLICE + 41, "legacy": 5}, {"dc-1": "mysql://u@h/x"})
    message = caught.value.message
    assert message.startswith("import refused, nothing written")
    assert "tags legacy are not tags of pool ns/p" in message
    assert "no database URL for datacenters dc-0" in message
    assert "tag orders, datacenter dc-0" in message
    assert "can never issue an ID above" in message


def test_a_slice_with_less_than_one_step_left_is_refused() -> None:
    pool = make_pool(dc_ids=(0,), step=1000)
    with pytest.raises(errors.InvalidPool, match="less than one step"):
        plan(pool, {"orders": SLICE - 500}, dsns(pool))
    # The same floor with room for a whole step is fine.
    (fits,) = plan(pool, {"orders": SLICE - 1002}, dsns(pool))
    assert fits.counter == SLICE - 1001
    assert segment.counter_limit(BITS) - fits.counter >= 1000
