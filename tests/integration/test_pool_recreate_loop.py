"""Delete and re-create a pool in a loop for a minute under client load: no ID twice.

Four sidecars serve Snowflake and Segment IDs without pause.  Every cycle the pool is
deleted (`nebula-id pool delete`, as a user would) and created again: with the same
spec, or first with the epoch moved or another layout (refused, since the IDs of the
pool are remembered) and then with the same spec.  Two sidecars restart each cycle.
Every ID any sidecar hands out is recorded; none may repeat.  It runs once per segment
database engine (PostgreSQL, MariaDB).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from nebula_id.core import layout as layouts
from tests.integration.pool_life import EPOCH, Load, Pool, Sidecar, spec
from tests.support.engines import EngineServer

pytestmark = pytest.mark.integration

DURATION_S = 62.0
CYCLE_S = 5.0
SIDECARS = 4


class Fleet:
    """Sidecars that can be restarted one by one, each on its own exit stack."""

    def __init__(self, pool: Pool, load: Load) -> None:
        self.pool = pool
        self.load = load
        self.stacks: dict[int, contextlib.AsyncExitStack] = {}
        self.sidecars: dict[int, Sidecar] = {}
        self.starts = 0

    async def start(self, index: int) -> None:
        stack = contextlib.AsyncExitStack()
        sidecar = await stack.enter_async_context(self.pool.sidecar(f"pod{index}-{self.starts}"))
        self.starts += 1
        self.stacks[index], self.sidecars[index] = stack, sidecar
        self.load.start(sidecar)

    async def stop(self, index: int) -> None:
        await self.load.stop(self.sidecars.pop(index))
        await self.stacks.pop(index).aclose()

    async def restart(self, index: int) -> None:
        await self.stop(index)
        await self.start(index)

    async def close(self) -> None:
        for index in list(self.sidecars):
            await self.stop(index)


async def test_delete_and_recreate_in_a_loop_under_load_never_repeats_an_id(
    etcd_endpoint: str, segment_db: EngineServer, tmp_path: Path
) -> None:
    pool = Pool(etcd_endpoint, segment_db.dsn(), tmp_path, name=f"loop-{segment_db.engine}")
    base = spec()
    moved = spec(epoch=layouts.format_epoch(layouts.parse_epoch(EPOCH) + 5000))
    other_layout = spec(worker_bits=6)
    assert pool.cli_apply(base).returncode == 0
    load = Load()
    fleet = Fleet(pool, load)
    refusals: list[str] = []
    issued_per_cycle: list[tuple[int, int]] = []
    try:
        for index in range(SIDECARS):
            await fleet.start(index)
        began = time.monotonic()
        cycle = 0
        while time.monotonic() - began < DURATION_S:
            started = time.monotonic()
            counts = len(load.snowflake), len(load.segment)
            deleted = await asyncio.to_thread(pool.cli_delete)
            assert deleted.returncode == 0, deleted.stderr
            await asyncio.sleep(0.3)
            attempt = (None, moved, other_layout)[cycle % 3]
            if attempt is not None:
                refused = await asyncio.to_thread(pool.cli_apply, attempt)
                assert refused.returncode != 0, "a re-creation that could repeat IDs was accepted"
                assert "remembered" in refused.stderr, refused.stderr
                refusals.append(refused.stderr.strip())
            created = await asyncio.to_thread(pool.cli_apply, base)
            assert created.returncode == 0, created.stderr
            for index in (cycle % SIDECARS, (cycle + 1) % SIDECARS):
                await fleet.restart(index)
            await asyncio.sleep(max(0.0, CYCLE_S - (time.monotonic() - started)))
            issued_per_cycle.append(
                (len(load.snowflake) - counts[0], len(load.segment) - counts[1])
            )
            cycle += 1
        elapsed = time.monotonic() - began
    finally:
        await fleet.close()
    assert elapsed >= 60.0
    assert load.duplicates() == (0, 0), f"duplicates (snowflake, segment): {load.duplicates()}"
    # Not vacuous: IDs kept coming in every life of the pool, and the refusals happened.
    assert cycle >= 10
    assert all(snow > 0 and seg > 0 for snow, seg in issued_per_cycle), issued_per_cycle
    assert len(refusals) >= 6
    print(
        f"{cycle} cycles in {elapsed:.1f} s: {len(load.snowflake)} Snowflake and "
        f"{len(load.segment)} Segment IDs, 0 duplicates; refusals {dict(load.refusals)}"
    )
