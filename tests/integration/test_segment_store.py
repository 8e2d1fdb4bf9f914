"""The PostgreSQL segment store against a real server: atomic ranges, provisioning, errors."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator

import asyncpg
import pytest

from nebula_id import errors
from nebula_id.core import pool as pools
from nebula_id.core import segment
from nebula_id.storage import postgres as pg_store
from tests.support.fixtures import PostgresFactory
from tests.support.services import PostgresCluster

pytestmark = pytest.mark.integration

FAST = pg_store.PostgresSettings(connect_timeout_s=1.0, command_timeout_s=1.0)


def make_pool(
    name: str, *, step: int = 10, dc_bits: int = 5, dc_ids: tuple[int, ...] = (0, 1)
) -> pools.PoolConfig:
    return pools.parse_spec(
        {
            "snowflake": {"datacenterBits": dc_bits, "workerBits": 10 - dc_bits},
            "datacenters": [{"name": f"dc-{i}", "id": i} for i in dc_ids],
            "segment": {
                "tags": [{"name": "orders", "step": step}, {"name": "users", "step": step}]
            },
        },
        namespace="it",
        name=name,
    )


def make_store(dsn: str, pool: pools.PoolConfig, dc: int = 0) -> pg_store.PostgresSegmentStore:
    return pg_store.PostgresSegmentStore(
        dsn, pool=pool, datacenter=pool.datacenters[dc], settings=FAST
    )


def row(cluster: PostgresCluster, pool: pools.PoolConfig, tag: str, dc: str) -> str:
    return cluster.psql(
        "SELECT datacenter_id, max_id, step FROM nebula_segments "
        f"WHERE pool = '{pool.ref}' AND tag = '{tag}' AND datacenter = '{dc}'",
        db="nebula",
    ).strip()


async def test_provision_is_idempotent_and_never_resets(postgres: PostgresCluster) -> None:
    pool = make_pool("provision")
    dc = pool.datacenters[0]
    created = await pg_store.provision(postgres.dsn(), pool, dc, settings=FAST)
    assert created.created_tags == ("orders", "users")
    store = make_store(postgres.dsn(), pool)
    try:
        before = await store.allocate("orders", 10)
        again = await pg_store.provision(postgres.dsn(), pool, dc, settings=FAST)
        after = await store.allocate("orders", 10)
    finally:
        await store.close()
    assert again.created_tags == ()
    assert again.existing_tags == ("orders", "users")
    assert before == segment.SegmentRange(start=1, end=11, datacenter="dc-0", step=10)
    assert after.start == before.end
    assert row(postgres, pool, "orders", "dc-0") == "0|21|10"


async def test_concurrent_provisioning_does_not_race(postgres: PostgresCluster) -> None:
    pool = make_pool("provision-race")
    results = await asyncio.gather(
        *(
            pg_store.provision(postgres.dsn(), pool, pool.datacenters[0], settings=FAST)
            for _ in range(8)
        )
    )
    assert sum(len(r.created_tags) for r in results) == 2


async def test_a_sidecar_finds_its_tags_ready_without_provisioning(
    postgres_factory: PostgresFactory,
) -> None:
    cluster = postgres_factory()
    pool = make_pool("lazy")
    store = make_store(cluster.dsn(), pool, dc=1)
    try:
        first = await store.allocate("users", 5)
    finally:
        await store.close()
    base = segment.datacenter_base(1, 5)
    assert first == segment.SegmentRange(start=base + 1, end=base + 6, datacenter="dc-1", step=5)


async def test_concurrent_allocations_never_overlap(postgres: PostgresCluster) -> None:
    pool = make_pool("concurrent")
    stores = [make_store(postgres.dsn(), pool) for _ in range(4)]
    steps = [1 + (i % 7) for i in range(200)]
    try:
        ranges = await asyncio.gather(
            *(stores[i % 4].allocate("orders", step) for i, step in enumerate(steps))
        )
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    ordered = sorted(ranges, key=lambda r: r.start)
    # Disjoint and, with no failure in between, gap-free from the first counter on.
    assert ordered[0].start == 1
    for previous, current in itertools.pairwise(ordered):
        assert previous.end == current.start
    assert ordered[-1].end == 1 + sum(steps)
    assert all(r.end - r.start == r.step for r in ranges)


async def test_the_step_is_a_parameter_of_each_allocation(postgres: PostgresCluster) -> None:
    pool = make_pool("steps")
    store = make_store(postgres.dsn(), pool)
    try:
        small = await store.allocate("orders", 7)
        large = await store.allocate("orders", 1300)
    finally:
        await store.close()
    assert (small.end - small.start, large.end - large.start) == (7, 1300)
    assert large.start == small.end
    assert row(postgres, pool, "orders", "dc-0") == f"0|{1 + 7 + 1300}|1300"


async def test_datacenters_live_in_disjoint_slices(postgres: PostgresCluster) -> None:
    # Both datacenters in one database: separate rows, separate high bits.
    pool = make_pool("slices", dc_bits=3, dc_ids=(2, 5))
    a, b = make_store(postgres.dsn(), pool, 0), make_store(postgres.dsn(), pool, 1)
    try:
        ranges_a = [await a.allocate("orders", 100) for _ in range(3)]
        ranges_b = [await b.allocate("orders", 100) for _ in range(3)]
    finally:
        await a.close()
        await b.close()
    for store, ranges in ((a, ranges_a), (b, ranges_b)):
        assert store.limit == segment.counter_limit(3)
        for r in ranges:
            assert store.base <= r.start < r.end <= store.base + store.limit
    assert a.base == 2 << 60
    assert b.base == 5 << 60
    assert {r.datacenter for r in ranges_a} == {"dc-2"}
    assert ranges_b[0].start == (5 << 60) + 1


async def test_the_counter_stops_at_the_end_of_the_slice(postgres: PostgresCluster) -> None:
    pool = make_pool("limit", dc_bits=5, dc_ids=(0, 1))
    store = make_store(postgres.dsn(), pool)
    limit = segment.counter_limit(5)
    try:
        await store.allocate("orders", 1)
        postgres.psql(
            f"UPDATE nebula_segments SET max_id = {limit - 5} "
            f"WHERE pool = '{pool.ref}' AND tag = 'orders' AND datacenter = 'dc-0'",
            db="nebula",
        )
        with pytest.raises(errors.StorageError, match="used its ID slice"):
            await store.allocate("orders", 6)
        last = await store.allocate("orders", 5)
        with pytest.raises(errors.StorageError, match="used its ID slice"):
            await store.allocate("orders", 1)
    finally:
        await store.close()
    # The very last ID of dc 0 is one below dc 1's base, never on it.
    assert last.end - 1 == segment.datacenter_base(1, 5) - 1


async def test_a_renumbered_datacenter_is_refused(postgres: PostgresCluster) -> None:
    old = make_pool("renumber", dc_ids=(1,))
    new = make_pool("renumber", dc_ids=(2,))
    renamed = pools.Datacenter(name="dc-1", id=2)
    await pg_store.provision(postgres.dsn(), old, old.datacenters[0], settings=FAST)
    with pytest.raises(errors.InvalidPool, match="created for datacenter id 1"):
        await pg_store.provision(postgres.dsn(), new, renamed, settings=FAST)
    store = pg_store.PostgresSegmentStore(
        postgres.dsn(), pool=new, datacenter=renamed, settings=FAST
    )
    try:
        with pytest.raises(errors.StorageError, match="belongs to datacenter id 1"):
            await store.allocate("orders", 10)
    finally:
        await store.close()


async def test_database_errors_become_storage_errors(postgres: PostgresCluster) -> None:
    pool = make_pool("errors")
    refused = make_store(f"postgresql://postgres:hunter2@127.0.0.1:{_closed_port()}/x", pool)
    missing_db = make_store(postgres.dsn("no_such_database"), pool)
    try:
        with pytest.raises(errors.StorageError) as refused_error:
            await refused.allocate("orders", 10)
        with pytest.raises(errors.StorageError) as missing_error:
            await missing_db.allocate("orders", 10)
    finally:
        await refused.close()
        await missing_db.close()
    assert isinstance(refused_error.value.__cause__, OSError)
    assert "hunter2" not in refused_error.value.message
    assert isinstance(missing_error.value.__cause__, asyncpg.InvalidCatalogNameError)
    with pytest.raises(errors.StorageError, match="cannot provision"):
        await pg_store.provision(postgres.dsn("no_such_database"), pool, pool.datacenters[0])


async def test_a_silent_server_times_out() -> None:
    pool = make_pool("timeout")
    with _silent_server() as port:
        store = make_store(f"postgresql://postgres@127.0.0.1:{port}/nebula", pool)
        started = time.monotonic()
        try:
            with pytest.raises(errors.StorageError, match="Timeout"):
                await store.allocate("orders", 10)
        finally:
            await store.close()
        elapsed = time.monotonic() - started
    # Two attempts of at most connect_timeout each, plus slack.
    assert elapsed < 4.0


async def test_the_store_reconnects_after_a_restart(postgres_factory: PostgresFactory) -> None:
    cluster = postgres_factory()
    pool = make_pool("restart")
    store = make_store(cluster.dsn(), pool)
    try:
        before = await store.allocate("orders", 10)
        cluster.stop()
        with pytest.raises(errors.StorageError):
            await store.allocate("orders", 10)
        cluster.start()
        after = await store.allocate("orders", 10)
        cluster.kill()
        cluster.start()
        # A crash leaves dead pooled connections behind; the next call still succeeds,
        # and the range allocated before the crash was durable (the test server runs
        # with synchronous_commit=off, which the store overrides for its sessions).
        again = await store.allocate("orders", 10)
    finally:
        await store.close()
    assert after.start >= before.end
    assert again.start >= after.end


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers, like a hung database host."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
