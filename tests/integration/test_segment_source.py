"""The cluster-mode segment source against real PostgreSQL: outages, failover, step, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import pathlib
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from nebula_id import errors
from nebula_id.clock import Clock, FakeClock, SystemClock
from nebula_id.config import database as database_config
from nebula_id.config import failover as failover_config
from nebula_id.core import failover, segment
from nebula_id.core import pool as pools
from nebula_id.storage import postgres as pg_store
from nebula_id.storage import postgres_source
from tests.support import pools as support_pools
from tests.support.fixtures import PostgresFactory
from tests.support.services import PostgresCluster
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

FAST_DB = pg_store.PostgresSettings(connect_timeout_s=1.0, command_timeout_s=1.0)
DC_BITS = 5


# Two datacenters and one tag, "orders"; each test sets the step (and maxStep).
make_pool = functools.partial(
    support_pools.make_pool,
    algorithm="segment",
    datacenters=[{"name": "dc-a", "id": 1}, {"name": "dc-b", "id": 2}],
)


@contextlib.asynccontextmanager
async def open_source(
    pool: pools.PoolConfig,
    dsns: dict[str, str],
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    threshold: int = 2,
    hold_down_s: float = 1.0,
) -> AsyncIterator[postgres_source.ClusterSegments]:
    database = database_config.DatabaseSettings(
        url=dsns.get("dc-a"), urls={k: v for k, v in dsns.items() if k != "dc-a"}
    )
    async with postgres_source.open_segments(
        database,
        pool,
        datacenter="dc-a",
        overrides=failover_config.FailoverOverrides(),
        clock=clock or SystemClock(),
        registry=registry or CollectorRegistry(),
        failover_settings=failover.FailoverSettings(
            failure_threshold=threshold, hold_down_s=hold_down_s, probe_interval_s=0.2
        ),
        postgres_settings=FAST_DB,
    ) as source:
        yield source


def slice_of(dc_id: int) -> range:
    base = segment.datacenter_base(dc_id, DC_BITS)
    return range(base, base + segment.counter_limit(DC_BITS))


async def drain(source: postgres_source.ClusterSegments, count: int, batch: int = 7) -> list[int]:
    """`count` IDs in batches, letting background loads run in between."""
    ids: list[int] = []
    while len(ids) < count:
        ids += await source.next_ids("orders", min(batch, count - len(ids)))
        await asyncio.sleep(0)
    return ids


def next_ready(source: postgres_source.ClusterSegments) -> bool:
    return bool(source.info()["tags"]["orders"]["next_ready"])


async def take_one_by_one(
    source: postgres_source.ClusterSegments, into: list[int], *, limit: int
) -> None:
    for _ in range(limit):
        into += await source.next_ids("orders", 1)


async def test_serves_buffered_ids_through_an_outage_then_resumes(
    postgres_factory: PostgresFactory,
) -> None:
    cluster = postgres_factory()
    pool = make_pool("outage", step=100, max_step=100)
    async with open_source(pool, {"dc-a": cluster.dsn()}) as source:
        served = await drain(source, 50)
        await eventually_async(lambda: next_ready(source), 10, what="the next range")
        cluster.stop()
        with pytest.raises(errors.SegmentExhausted) as exhausted:
            await take_one_by_one(source, served, limit=1000)
        # Everything buffered was served: the rest of the current range and the next one.
        assert len(served) == 200
        assert exhausted.value.reason == "segments_exhausted"
        assert source.ready_reason() == "segments_exhausted"
        cluster.start()
        resumed = await eventually_async(
            lambda: source.next_ids("orders", 10),
            10,
            what="IDs after PostgreSQL is back",
            interval=0.1,
            ignoring=(errors.SegmentExhausted,),
        )
        assert len(resumed) == 10
        served += resumed
    assert len(set(served)) == len(served)
    assert served == sorted(served)
    assert resumed[0] >= 201 + segment.datacenter_base(1, DC_BITS)


async def test_fails_over_to_the_next_datacenter_and_comes_back(
    postgres_factory: PostgresFactory,
) -> None:
    dc_a, dc_b = postgres_factory(), postgres_factory()
    pool = make_pool("failover", step=50, max_step=50)
    registry = CollectorRegistry()
    seen: dict[str, set[int]] = {"dc-a": set(), "dc-b": set()}
    served: list[int] = []
    async with open_source(
        pool, {"dc-a": dc_a.dsn(), "dc-b": dc_b.dsn()}, registry=registry, hold_down_s=1.0
    ) as source:
        served += await drain(source, 500)
        assert source.info()["tags"]["orders"]["datacenter"] == "dc-a"
        dc_a.kill()
        served += await drain(source, 2000)
        assert source.info()["tags"]["orders"]["datacenter"] == "dc-b"
        assert source.info()["failover"]["current"] == "dc-b"
        dc_a.start()

        # The probe notices the recovery; after the hold-down, ranges come from dc-a again.
        async def back_on_dc_a() -> bool:
            served.extend(await drain(source, 60))
            return bool(source.info()["tags"]["orders"]["datacenter"] == "dc-a")

        await eventually_async(back_on_dc_a, 30, what="ranges from dc-a again")
        served += await drain(source, 200)
        remaining = registry.get_sample_value("nebula_id_segment_remaining", {"tag": "orders"})
        assert remaining == source.info()["tags"]["orders"]["remaining"]
    for value in served:
        if value in slice_of(1):
            seen["dc-a"].add(value)
        elif value in slice_of(2):
            seen["dc-b"].add(value)
        else:
            pytest.fail(f"{value} lies in no datacenter's slice")
    assert len(set(served)) == len(served), "an ID repeated"
    assert seen["dc-a"]
    assert seen["dc-b"]
    # Provably disjoint: every dc-a ID lies below dc-b's base, every dc-b ID at or above it.
    assert max(seen["dc-a"]) < segment.datacenter_base(2, DC_BITS) <= min(seen["dc-b"])
    # Within one datacenter the IDs increase in the order they were served.
    for name in ("dc-a", "dc-b"):
        in_order = [v for v in served if v in seen[name]]
        assert in_order == sorted(in_order)
    assert (registry.get_sample_value("nebula_id_segment_failovers_total") or 0) >= 2
    errors_a = registry.get_sample_value(
        "nebula_id_segment_allocation_errors_total", {"datacenter": "dc-a"}
    )
    assert errors_a is not None
    assert errors_a >= 1
    # Closing the source takes its gauges off the registry.
    assert registry.get_sample_value("nebula_id_segment_remaining", {"tag": "orders"}) is None


async def test_the_step_doubles_under_load_and_halves_when_it_drops(
    postgres: PostgresCluster,
) -> None:
    clock = FakeClock()
    pool = make_pool("adaptive", step=100, max_step=800)

    async def load_steps(
        source: postgres_source.ClusterSegments, loads: int, gap_s: float
    ) -> list[int]:
        sizes: list[int] = []
        while len(sizes) < loads:
            before = source.info()["tags"]["orders"]["loads"]
            await drain(source, source.info()["tags"]["orders"]["remaining"] or 1, batch=1000)
            clock.advance(gap_s)
            await eventually_async(
                lambda before=before: source.info()["tags"]["orders"]["loads"] > before,
                10,
                what="the next load",
                interval=0.01,
            )
            current = source.info()["tags"]["orders"]["range"]
            sizes.append(current[1] - current[0])
        return sizes

    async with open_source(pool, {"dc-a": postgres.dsn()}, clock=clock) as source:
        # A range lasting seconds (far under 15 minutes): the step doubles up to maxStep.
        growing = await load_steps(source, 5, gap_s=1.0)
        # Ranges lasting over 30 minutes: the step halves back towards the configured step.
        shrinking = await load_steps(source, 5, gap_s=31 * 60)
    assert max(growing) == 800
    assert growing == sorted(growing)
    assert 200 in growing
    assert shrinking[-1] < shrinking[0]
    assert min(shrinking) == 100


async def test_a_restart_never_reissues_buffered_ids(postgres: PostgresCluster) -> None:
    pool = make_pool("restart", step=100, max_step=100)
    async with open_source(pool, {"dc-a": postgres.dsn()}) as first:
        before = await drain(first, 30)
        await eventually_async(lambda: next_ready(first), 10, what="the next range")
        info = first.info()["tags"]["orders"]
        buffered_end = max(info["range"][1], (info["next_range"] or [0, 0])[1])
    async with open_source(pool, {"dc-a": postgres.dsn()}) as second:
        after = await drain(second, 30)
    assert info["next_ready"] is True
    assert min(after) >= buffered_end
    assert not set(before) & set(after)


async def test_unknown_datacenters_in_the_urls_are_refused(postgres: PostgresCluster) -> None:
    pool = make_pool("unknown-dc", step=10, max_step=10)
    with pytest.raises(errors.ConfigError, match="dc-x"):
        async with open_source(pool, {"dc-a": postgres.dsn(), "dc-x": postgres.dsn()}):
            pass


async def test_dsns_come_from_the_url_the_urls_and_the_url_dir(
    postgres: PostgresCluster, tmp_path: pathlib.Path
) -> None:
    pool = make_pool("url-dir", step=10, max_step=10)
    (tmp_path / "dc-b").write_text(postgres.dsn() + "\n")
    (tmp_path / ".hidden").write_text("ignored")
    database = database_config.DatabaseSettings(url=postgres.dsn("own"), url_dir=str(tmp_path))
    # The own datacenter's URL wins over a mounted file of the same name.
    assert postgres_source.datacenter_dsns(database, "dc-b", pool) == {"dc-b": postgres.dsn("own")}
    database = database_config.DatabaseSettings(url_dir=str(tmp_path))
    assert postgres_source.datacenter_dsns(database, "dc-a", pool) == {"dc-b": postgres.dsn()}
    # No URL for the own datacenter: the sidecar prefers the first one it can reach.
    async with postgres_source.open_segments(
        database,
        pool,
        datacenter="dc-a",
        overrides=failover_config.FailoverOverrides(),
        clock=SystemClock(),
        registry=CollectorRegistry(),
    ) as source:
        served = await source.next_ids("orders", 3)
        assert source.info()["failover"]["preferred"] == "dc-b"
    assert all(v in slice_of(2) for v in served)
    with pytest.raises(errors.ConfigError, match="NEBULA_DATABASE_URL"):
        postgres_source.datacenter_dsns(database_config.DatabaseSettings(), None, pool)
