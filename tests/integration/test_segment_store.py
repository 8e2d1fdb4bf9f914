"""The segment store against real servers of both engines (PostgreSQL and MariaDB):
atomic ranges, provisioning, floors, generations and drops, repairs from etcd, errors, crashes.

Every test runs once per engine (the `engine` fixture), through
`storage.engines`, the entry point the sidecar, the operator and the CLI use.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from asyncmy import errors as mysql_errors

from nebula_id import errors
from nebula_id.core import keys as pool_keys
from nebula_id.core import pool as pools
from nebula_id.core import segment
from nebula_id.etcd import client as etcd_client
from nebula_id.etcd import floors
from nebula_id.storage import engines, floored
from tests.support import pools as support_pools
from tests.support.engines import EngineServer
from tests.support.fixtures import EngineFactory

pytestmark = pytest.mark.integration

FAST = engines.DatabaseSettings(connect_timeout_s=1.0, command_timeout_s=1.0)


def snowflake(dc_bits: int) -> dict[str, int]:
    return {"datacenterBits": dc_bits, "workerBits": 10 - dc_bits}


# Two tags of step 10 over datacenters dc-0 and dc-1 with 5 datacenter bits.
make_pool = functools.partial(
    support_pools.make_pool, step=10, tags=("orders", "users"), snowflake=snowflake(5)
)


def make_store(
    dsn: str,
    pool: pools.PoolConfig,
    dc: int = 0,
    *,
    settings: engines.DatabaseSettings = FAST,
) -> engines.SegmentDatabase:
    return engines.open_store(dsn, pool=pool, datacenter=pool.datacenters[dc], settings=settings)


def row(db: EngineServer, pool: pools.PoolConfig, tag: str, dc: str) -> str:
    found = db.rows(
        "SELECT datacenter_id, max_id, step FROM nebula_segments "
        f"WHERE pool = '{pool.ref}' AND tag = '{tag}' AND datacenter = '{dc}'"
    )
    return "|".join(found[0]) if found else ""


async def test_provision_is_idempotent_and_never_resets(segment_db: EngineServer) -> None:
    pool = make_pool("provision")
    dc = pool.datacenters[0]
    created = await engines.provision(segment_db.dsn(), pool, dc, settings=FAST)
    assert created.created_tags == ("orders", "users")
    store = make_store(segment_db.dsn(), pool)
    try:
        before = await store.allocate("orders", 10)
        again = await engines.provision(segment_db.dsn(), pool, dc, settings=FAST)
        after = await store.allocate("orders", 10)
    finally:
        await store.close()
    assert again.created_tags == ()
    assert again.existing_tags == ("orders", "users")
    assert before == segment.SegmentRange(start=1, end=11, datacenter="dc-0", step=10)
    assert after.start == before.end
    assert row(segment_db, pool, "orders", "dc-0") == "0|21|10"


async def test_concurrent_provisioning_does_not_race(segment_db: EngineServer) -> None:
    pool = make_pool("provision-race")
    results = await asyncio.gather(
        *(
            engines.provision(segment_db.dsn(), pool, pool.datacenters[0], settings=FAST)
            for _ in range(8)
        )
    )
    assert sum(len(r.created_tags) for r in results) == 2


async def test_a_sidecar_finds_its_tags_ready_without_provisioning(
    segment_db_factory: EngineFactory,
) -> None:
    cluster = segment_db_factory()
    pool = make_pool("lazy")
    store = make_store(cluster.dsn(), pool, dc=1)
    try:
        first = await store.allocate("users", 5)
    finally:
        await store.close()
    base = segment.datacenter_base(1, 5)
    assert first == segment.SegmentRange(start=base + 1, end=base + 6, datacenter="dc-1", step=5)


async def test_concurrent_allocations_never_overlap(segment_db: EngineServer) -> None:
    pool = make_pool("concurrent")
    stores = [make_store(segment_db.dsn(), pool) for _ in range(4)]
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


async def test_the_step_is_a_parameter_of_each_allocation(segment_db: EngineServer) -> None:
    pool = make_pool("steps")
    store = make_store(segment_db.dsn(), pool)
    try:
        small = await store.allocate("orders", 7)
        large = await store.allocate("orders", 1300)
    finally:
        await store.close()
    assert (small.end - small.start, large.end - large.start) == (7, 1300)
    assert large.start == small.end
    assert row(segment_db, pool, "orders", "dc-0") == f"0|{1 + 7 + 1300}|1300"


async def test_datacenters_live_in_disjoint_slices(segment_db: EngineServer) -> None:
    # Both datacenters in one database: separate rows, separate high bits.
    pool = make_pool("slices", snowflake=snowflake(3), dc_ids=(2, 5))
    a, b = make_store(segment_db.dsn(), pool, 0), make_store(segment_db.dsn(), pool, 1)
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


async def test_the_counter_stops_at_the_end_of_the_slice(segment_db: EngineServer) -> None:
    pool = make_pool("limit", snowflake=snowflake(5), dc_ids=(0, 1))
    store = make_store(segment_db.dsn(), pool)
    limit = segment.counter_limit(5)
    try:
        await store.allocate("orders", 1)
        segment_db.execute(
            f"UPDATE nebula_segments SET max_id = {limit - 5} "
            f"WHERE pool = '{pool.ref}' AND tag = 'orders' AND datacenter = 'dc-0'"
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


async def test_a_renumbered_datacenter_is_refused(segment_db: EngineServer) -> None:
    old = make_pool("renumber", dc_ids=(1,))
    new = make_pool("renumber", dc_ids=(2,))
    renamed = pools.Datacenter(name="dc-1", id=2)
    await engines.provision(segment_db.dsn(), old, old.datacenters[0], settings=FAST)
    with pytest.raises(errors.InvalidPool, match="created for datacenter id 1"):
        await engines.provision(segment_db.dsn(), new, renamed, settings=FAST)
    store = engines.open_store(segment_db.dsn(), pool=new, datacenter=renamed, settings=FAST)
    try:
        with pytest.raises(errors.StorageError, match="belongs to datacenter id 1"):
            await store.allocate("orders", 10)
    finally:
        await store.close()


async def test_database_errors_become_storage_errors(segment_db: EngineServer) -> None:
    pool = make_pool("errors")
    refused = make_store(segment_db.dsn_at_port(_closed_port(), "x", password="hunter2"), pool)
    missing_db = make_store(segment_db.dsn("no_such_database"), pool)
    try:
        with pytest.raises(errors.StorageError) as refused_error:
            await refused.allocate("orders", 10)
        with pytest.raises(errors.StorageError) as missing_error:
            await missing_db.allocate("orders", 10)
    finally:
        await refused.close()
        await missing_db.close()
    assert "hunter2" not in refused_error.value.message
    if segment_db.engine == "postgresql":
        assert isinstance(refused_error.value.__cause__, OSError)
        assert isinstance(missing_error.value.__cause__, asyncpg.InvalidCatalogNameError)
    else:
        # 2003: cannot connect; 1049: unknown database.
        assert isinstance(refused_error.value.__cause__, mysql_errors.OperationalError)
        assert refused_error.value.__cause__.args[0] == 2003
        assert isinstance(missing_error.value.__cause__, mysql_errors.OperationalError)
        assert missing_error.value.__cause__.args[0] == 1049
    with pytest.raises(errors.StorageError, match="cannot provision"):
        await engines.provision(segment_db.dsn("no_such_database"), pool, pool.datacenters[0])


async def test_a_silent_server_times_out(engine: str) -> None:
    pool = make_pool("timeout")
    with _silent_server() as port:
        scheme = "postgresql" if engine == "postgresql" else "mysql"
        store = make_store(f"{scheme}://user@127.0.0.1:{port}/nebula", pool)
        started = time.monotonic()
        try:
            with pytest.raises(errors.StorageError, match="Timeout"):
                await store.allocate("orders", 10)
        finally:
            await store.close()
        elapsed = time.monotonic() - started
    # Two attempts of at most connect_timeout (1 s) each; at the default timeout they would
    # take twice the default or more, so staying under that shows the setting applied.
    print(f"a silent {engine} server: StorageError after {elapsed:.2f} s")
    assert elapsed < 2 * engines.DatabaseSettings().connect_timeout_s


async def test_the_store_reconnects_after_a_restart(segment_db_factory: EngineFactory) -> None:
    cluster = segment_db_factory()
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
        # and the range allocated before the crash was durable (the PostgreSQL test
        # server runs with synchronous_commit=off, which the store overrides for its
        # sessions; MariaDB runs with innodb_flush_log_at_trx_commit=1).
        again = await store.allocate("orders", 10)
    finally:
        await store.close()
    assert after.start >= before.end
    assert again.start >= after.end


async def test_a_floor_only_ever_rises(segment_db: EngineServer) -> None:
    pool = make_pool("floor")
    store = make_store(segment_db.dsn(), pool)
    try:
        first = await store.allocate("orders", 10)
        raised = await store.raise_floor("orders", 5000)
        again = await store.raise_floor("orders", 5000)
        lower = await store.raise_floor("orders", 100)
        after = await store.allocate("orders", 10)
        # A tag whose row does not exist yet gets it, already raised.
        fresh = await store.raise_floor("users", 7)
        users = await store.allocate("users", 10)
        with pytest.raises(errors.InvalidPool, match="not a tag"):
            await store.raise_floor("nope", 7)
    finally:
        await store.close()
    assert first.start == 1
    assert raised == (11, 5000)
    assert again == (5000, 5000)
    assert lower == (5000, 5000)
    assert after.start == 5000
    assert fresh == (1, 7)
    assert users.start == 7


async def test_rows_are_repaired_from_a_floor_and_not_created_at_1(
    segment_db: EngineServer,
) -> None:
    """The repair interface `storage.floored` uses: no row at 1, raise_row to a floor."""
    pool = make_pool("repair")
    dc = pool.datacenters[0]
    strict = engines.open_store(
        segment_db.dsn(), pool=pool, datacenter=dc, settings=FAST, create_rows=False
    )
    try:
        with pytest.raises(floored.RowMissing, match="only provisioning creates rows"):
            await strict.allocate("orders", 10)
        await strict.raise_row("orders", 700)  # created at the floor, not at 1
        first = await strict.allocate("orders", 10)
        await strict.raise_row("orders", 5)  # never lowers
        second = await strict.allocate("orders", 10)
        await strict.raise_row("orders", 9000)
        third = await strict.allocate("orders", 10)
    finally:
        await strict.close()
    assert strict.datacenter_id == 0
    assert (first.start, second.start, third.start) == (700, 710, 9000)
    # Another datacenter ID's row is left alone by a repair.
    other = engines.open_store(
        segment_db.dsn(),
        pool=pool,
        datacenter=pools.Datacenter(name="dc-0", id=3),
        settings=FAST,
    )
    try:
        await other.raise_row("orders", 10**6)
    finally:
        await other.close()
    assert row(segment_db, pool, "orders", "dc-0") == "0|9010|10"


async def test_the_row_and_the_etcd_floor_repair_each_other(
    segment_db: EngineServer, etcd_endpoint: str
) -> None:
    """`storage.floored` over each engine: the higher witness wins, the other is repaired."""
    pool = dataclasses.replace(make_pool("witnesses"), generation=2)
    dc = pool.datacenters[0]
    await engines.provision(segment_db.dsn(), pool, dc, settings=FAST)
    keys = pool_keys.PoolKeys("it", f"witnesses-{uuid.uuid4().hex[:8]}")
    where = f"WHERE pool = '{pool.ref}' AND tag = 'orders' AND datacenter = 'dc-0'"
    inner = engines.open_store(
        segment_db.dsn(), pool=pool, datacenter=dc, settings=FAST, create_rows=False
    )
    async with etcd_client.EtcdClient(
        etcd_client.EtcdSettings(endpoints=(etcd_endpoint,))
    ) as client:
        store = floored.FlooredStore(inner, client, keys)
        try:
            first = await store.allocate("orders", 10)
            assert await floors.read_floor(client, keys, 0, "orders") == 11
            # The row went back (a restore, a promoted async replica): its range is
            # thrown away, the row raised to the floor, and the next range starts there.
            segment_db.execute(f"UPDATE nebula_segments SET max_id = 1 {where}")
            after_restore = await store.allocate("orders", 10)
            # The row was lost: it is re-created at the floor, never at 1.
            segment_db.execute(f"DELETE FROM nebula_segments {where}")
            after_loss = await store.allocate("orders", 10)
            assert segment_db.rows(f"SELECT generation FROM nebula_segments {where}") == [("2",)]
            # etcd lost the floor: the row carries on and etcd is written again.
            await client.delete(keys.floor(0, "orders"))
            after_etcd_loss = await store.allocate("orders", 10)
            assert await floors.read_floor(client, keys, 0, "orders") == 41
            # Both witnesses gone: refused, not a fresh start at 1.
            await client.delete(keys.floor(0, "orders"))
            segment_db.execute(f"DELETE FROM nebula_segments {where}")
            with pytest.raises(errors.StorageError, match="only provisioning creates rows"):
                await store.allocate("orders", 10)
        finally:
            await store.close()
    assert [r.start for r in (first, after_restore, after_loss, after_etcd_loss)] == [
        1,
        11,
        21,
        31,
    ]
    assert segment_db.rows(f"SELECT max_id FROM nebula_segments {where}") == []


def generations(db: EngineServer, pool: pools.PoolConfig) -> dict[str, int]:
    found = db.rows(
        f"SELECT tag, generation FROM nebula_segments WHERE pool = '{pool.ref}' ORDER BY tag"
    )
    return {tag: int(generation) for tag, generation in found}


async def test_rows_carry_the_generation_and_a_drop_spares_later_lives(
    segment_db: EngineServer,
) -> None:
    first_life = make_pool("generations")
    dc = first_life.datacenters[0]
    other_pool = make_pool("generations-other")
    await engines.provision(segment_db.dsn(), other_pool, dc, settings=FAST)
    await engines.provision(segment_db.dsn(), first_life, dc, settings=FAST)
    assert generations(segment_db, first_life) == {"orders": 0, "users": 0}
    # The pool is created again (its data kept): provisioning takes the rows over.
    third_life = dataclasses.replace(first_life, generation=3)
    await engines.provision(segment_db.dsn(), third_life, dc, settings=FAST)
    assert generations(segment_db, first_life) == {"orders": 3, "users": 3}
    # A late provisioning of an earlier life never lowers the stamp.
    await engines.provision(
        segment_db.dsn(), dataclasses.replace(first_life, generation=1), dc, settings=FAST
    )
    assert generations(segment_db, first_life) == {"orders": 3, "users": 3}
    # A row repaired from a floor is created with the pool's generation.
    store = engines.open_store(
        segment_db.dsn(),
        pool=dataclasses.replace(third_life, datacenters=(pools.Datacenter("dc-9", 9),)),
        datacenter=pools.Datacenter("dc-9", 9),
        settings=FAST,
        create_rows=False,
    )
    try:
        await store.raise_row("orders", 40)
    finally:
        await store.close()
    assert generations(segment_db, first_life) == {"orders": 3, "users": 3}
    assert segment_db.rows(
        "SELECT generation, max_id FROM nebula_segments "
        f"WHERE pool = '{first_life.ref}' AND datacenter = 'dc-9'"
    ) == [("3", "40")]
    # The drop of an earlier life (a deposed leader's, say) deletes nothing of this one.
    assert await engines.drop_rows(segment_db.dsn(), first_life.ref, 2, settings=FAST) == 0
    assert await engines.drop_rows(segment_db.dsn(), first_life.ref, 3, settings=FAST) == 3
    assert generations(segment_db, first_life) == {}
    assert generations(segment_db, other_pool) == {"orders": 0, "users": 0}


async def test_a_drop_without_a_table_drops_nothing(segment_db: EngineServer) -> None:
    name = f"empty_{segment_db.engine}_{random.randrange(1 << 30)}"
    dsn = segment_db.server.create_database(name)
    assert await engines.drop_rows(dsn, "it/none", 5, settings=FAST) == 0
    schema = "table_catalog" if segment_db.engine == "postgresql" else "table_schema"
    tables = segment_db.rows(
        "SELECT COUNT(*) FROM information_schema.tables "
        f"WHERE table_name = 'nebula_segments' AND {schema} = '{name}'",
        db=name,
    )
    assert tables == [("0",)], "a drop created the table"


async def test_a_table_without_generations_gets_the_column(segment_db: EngineServer) -> None:
    name = f"old_{segment_db.engine}_{random.randrange(1 << 30)}"
    dsn = segment_db.server.create_database(name)
    pool = make_pool("old-table")
    dc = pool.datacenters[0]
    await engines.provision(dsn, pool, dc, settings=FAST)
    # A table as made before rows carried a generation, with a counter already used.
    segment_db.execute("ALTER TABLE nebula_segments DROP COLUMN generation", db=name)
    segment_db.execute(
        f"UPDATE nebula_segments SET max_id = 500 WHERE pool = '{pool.ref}'", db=name
    )
    # A drop before any provisioning of the new code keeps working, by generation 0.
    other = make_pool("old-table-other")
    segment_db.execute(
        "INSERT INTO nebula_segments (pool, tag, datacenter, datacenter_id, max_id, step) "
        f"VALUES ('{other.ref}', 'orders', 'dc-0', 0, 9, 1)",
        db=name,
    )
    assert await engines.drop_rows(dsn, other.ref, 0, settings=FAST) == 1
    # Provisioning adds the column too.
    segment_db.execute("ALTER TABLE nebula_segments DROP COLUMN generation", db=name)
    second_life = dataclasses.replace(pool, generation=1)
    await engines.provision(dsn, second_life, dc, settings=FAST)
    store = engines.open_store(dsn, pool=second_life, datacenter=dc, settings=FAST)
    try:
        continued = await store.allocate("orders", 10)
    finally:
        await store.close()
    assert continued.start == 500
    assert segment_db.rows(
        f"SELECT tag, generation FROM nebula_segments WHERE pool = '{pool.ref}' ORDER BY tag",
        db=name,
    ) == [("orders", "1"), ("users", "1")]


async def test_provisioning_warns_when_commits_are_not_durable(
    segment_db_factory: EngineFactory,
) -> None:
    db = segment_db_factory()
    pool = make_pool("durability")
    durable = await engines.provision(db.dsn(), pool, pool.datacenters[0], settings=FAST)
    if db.engine == "mysql":
        db.execute("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
    # PostgreSQL: the test server runs with synchronous_commit=off, and the store
    # sets it back on for its own sessions, so there is nothing to warn about.
    lax = await engines.provision(db.dsn(), pool, pool.datacenters[1], settings=FAST)
    assert durable.warnings == ()
    if db.engine == "mysql":
        assert len(lax.warnings) == 1
        assert "innodb_flush_log_at_trx_commit is 2" in lax.warnings[0]
    else:
        assert lax.warnings == ()


async def test_eight_clients_never_repeat_across_server_crashes(
    segment_db_factory: EngineFactory,
) -> None:
    """8 clients allocate while the server is SIGKILLed and restarted: no range repeats."""
    db = segment_db_factory()
    pool = make_pool("crash", step=10)
    await engines.provision(db.dsn(), pool, pool.datacenters[0], settings=FAST)
    crashes = 3
    stores = [make_store(db.dsn(), pool) for _ in range(8)]
    ranges: list[segment.SegmentRange] = []
    failures = [0]
    done = asyncio.Event()
    progressed = asyncio.Event()
    rng = random.Random(16)

    async def more_ranges(count: int) -> None:
        target = len(ranges) + count
        while len(ranges) < target:
            progressed.clear()
            await progressed.wait()

    async def client(store: engines.SegmentDatabase) -> None:
        while not done.is_set():
            try:
                ranges.append(await store.allocate("orders", rng.randint(1, 50)))
                progressed.set()
            except errors.StorageError:
                failures[0] += 1
                await asyncio.sleep(0.01)

    async def crasher() -> list[int]:
        counts = []
        for _ in range(crashes):
            await more_ranges(100)
            counts.append(len(ranges))
            db.kill()
            await asyncio.to_thread(db.start)
        await more_ranges(100)
        done.set()
        return counts

    try:
        async with asyncio.timeout(120):
            counts, *_ = await asyncio.gather(crasher(), *(client(s) for s in stores))
    finally:
        done.set()
        await asyncio.gather(*(s.close() for s in stores))
    ordered = sorted(ranges, key=lambda r: r.start)
    overlaps = [(a, b) for a, b in itertools.pairwise(ordered) if a.end > b.start]
    ids = sum(r.size for r in ranges)
    print(
        f"{db.engine}: {len(ranges)} ranges, {ids} IDs, {failures[0]} failed calls, "
        f"kills after {counts} ranges"
    )
    assert overlaps == []
    assert len(counts) == crashes
    assert failures[0] > 0  # the kills did hit allocations in flight
    assert len(ranges) >= counts[-1] + 100  # and allocation resumed after the last restart


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
