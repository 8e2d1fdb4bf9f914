"""A pool's whole life against real etcd and each segment database: no ID is ever issued twice.

Each test is an ordinary operator action while sidecars serve under client load:
deleting a pool with its data dropped, deleting and re-creating it (with the same or
another epoch, layout or datacenters), a deposed operator leader finishing a drop, and
a database that lost its segment row.  Every ID handed out is recorded; none may repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import pytest

from nebula_id import errors
from nebula_id.clock import SystemClock
from nebula_id.core import layout as layouts
from nebula_id.core import segment
from nebula_id.etcd import pools as pool_store
from nebula_id.storage import engines
from nebula_id_operator import leader, reconcile
from tests.integration.pool_life import TAG, Load, Pool, serving, spec
from tests.support.engines import EngineServer
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration


@pytest.fixture
def pool(etcd_endpoint: str, segment_db: EngineServer, tmp_path: Path) -> Pool:
    """A pool whose segments live in `segment_db` (each test runs on both engines).

    The database is shared by the session: a name of its own keeps other tests' rows out.
    """
    return Pool(etcd_endpoint, segment_db.dsn(), tmp_path, name=f"p-{uuid.uuid4().hex[:8]}")


def row_max(db: EngineServer, pool: Pool) -> int | None:
    found = db.rows(
        "SELECT max_id FROM nebula_segments "
        f"WHERE pool = '{pool.ref}' AND tag = '{TAG}' AND datacenter = 'dc-a'"
    )
    return int(found[0][0]) if found else None


async def test_drop_data_while_sidecars_serve_never_repeats_an_id(
    pool: Pool, segment_db: EngineServer
) -> None:
    await pool.apply(spec())
    load = Load()
    async with contextlib.AsyncExitStack() as stack:
        for i in range(4):
            s = await stack.enter_async_context(pool.sidecar(f"s{i}"))
            await eventually_async(lambda s=s: serving(s), timeout=10, what=f"{s.pod} to serve")
            load.start(s)
            # Staggered starts: the holders' keepalive ticks are out of phase, as in a
            # real deployment, so they notice a lost claim at different moments.
            await asyncio.sleep(0.13)
        await eventually_async(
            lambda: len(load.snowflake) >= 100 and len(load.segment) >= 100,
            30,
            what="both kinds of ID flowing",
        )
        async with pool.client() as client:
            await reconcile.delete(pool.operator(client), "life", pool.name, drop=True)
        # Whatever the old sidecars do in this window, nothing they issue may repeat an ID.
        await asyncio.sleep(1.5)
        await load.stop()
    assert load.duplicates() == (0, 0), f"duplicates (snowflake, segment): {load.duplicates()}"
    assert row_max(segment_db, pool) is None  # the data was dropped


async def test_recreate_with_another_epoch_is_refused_and_the_same_one_continues(
    pool: Pool,
) -> None:
    assert pool.cli_apply(spec()).returncode == 0
    load = Load()
    async with contextlib.AsyncExitStack() as first:
        for i in range(2):
            s = await first.enter_async_context(pool.sidecar(f"pod{i}"))
            await eventually_async(lambda s=s: serving(s), timeout=10, what=f"{s.pod} to serve")
            load.start(s)
        await asyncio.sleep(5.0)
        assert pool.cli_delete().returncode == 0
        # The epoch four seconds later: the IDs of four seconds ago would come again (a new
        # holder waits past the kept mark, at most a TTL and a tick ahead of the clock).
        later = layouts.format_epoch(layouts.parse_epoch("2024-01-01T00:00:00Z") + 4000)
        moved = pool.cli_apply(spec(epoch=later))
        if moved.returncode != 0:
            assert "remembered" in moved.stderr, moved.stderr
            assert "same layout" in moved.stderr
            other_layout = pool.cli_apply(spec(worker_bits=6))
            assert other_layout.returncode != 0
            assert "remembered" in other_layout.stderr
            assert pool.cli_apply(spec()).returncode == 0
        await load.stop()
    # The pods restart with the pool as it is stored now.
    async with contextlib.AsyncExitStack() as second:
        for i in range(2):
            s = await second.enter_async_context(pool.sidecar(f"pod{i}"))
            await eventually_async(lambda s=s: serving(s), timeout=10, what=f"{s.pod} to serve")
            load.start(s)
        await asyncio.sleep(3.0)
        await load.stop()
    assert load.duplicates() == (0, 0), f"duplicates (snowflake, segment): {load.duplicates()}"


async def test_recreate_with_another_layout_never_repeats_an_id(pool: Pool) -> None:
    await pool.apply(spec(worker_bits=5))
    load = Load()
    async with contextlib.AsyncExitStack() as stack:
        old = await stack.enter_async_context(pool.sidecar("old"))
        await eventually_async(lambda: serving(old), timeout=10, what="the old sidecar to serve")
        load.start(old)
        await asyncio.sleep(0.5)
        async with pool.client() as client:
            await pool_store.delete(client, pool.keys)
            with contextlib.suppress(errors.InvalidPool):
                await pool_store.apply(client, pool.keys, spec(worker_bits=6))
        if await pool.config() is None:
            await pool.apply(spec(worker_bits=5))
        new = await stack.enter_async_context(pool.sidecar("new"))
        await eventually_async(lambda: serving(new), timeout=10, what="the new sidecar to serve")
        load.start(new)
        await asyncio.sleep(2.0)
        await load.stop()
        # The old sidecar never serves the old layout next to the new one.
        assert old.snowflake.layout == new.snowflake.layout or old.snowflake.ready_reason()
    assert load.duplicates() == (0, 0), f"duplicates (snowflake, segment): {load.duplicates()}"


async def test_a_retired_datacenter_id_survives_the_pool(pool: Pool) -> None:
    ref = {"databaseSecretRef": {"name": "db", "key": "dsn"}}
    both = [{"name": "dc-a", **ref}, {"name": "dc-b", **ref}]
    config = await pool.apply(spec(datacenters=both))
    assert {dc.name: dc.id for dc in config.datacenters} == {"dc-a": 0, "dc-b": 1}
    await pool.apply(spec(datacenters=[{"name": "dc-a", **ref}]))  # dc-b (id 1) retired
    async with pool.client() as client:
        await pool_store.delete(client, pool.keys)
    again = await pool.apply(spec(datacenters=[{"name": "dc-a", **ref}, {"name": "dc-c", **ref}]))
    ids = {dc.name: dc.id for dc in again.datacenters}
    assert ids["dc-c"] != 1, "a new datacenter got the ID of a removed one"
    assert 1 in again.retired_datacenter_ids


async def test_a_deposed_leader_cannot_drop_a_recreated_pool(
    pool: Pool, segment_db: EngineServer
) -> None:
    clock = SystemClock()
    key = f"{pool.prefix}/operator/leader"
    async with pool.client() as client_a, pool.client() as client_b:
        a = leader.LeaderElection(client_a, key=key, identity="a", ttl_seconds=2, clock=clock)
        b = leader.LeaderElection(client_b, key=key, identity="b", ttl_seconds=2, clock=clock)
        assert await a.try_acquire()
        ctx_a = pool.operator(client_a, fence=a.fence)
        ctx_b = pool.operator(client_b, fence=b.fence)
        await pool.apply(spec())
        # A is paused: its lease runs out and B leads.
        leases = await client_b.leases()
        for lease in leases:
            info = await client_b.time_to_live(lease, keys=True)
            if key in info.keys:
                await client_b.revoke(lease)
        assert await b.try_acquire()
        # B drops the pool's data; the pool is created again and hands out IDs.
        await reconcile.delete(ctx_b, "life", pool.name, drop=True)
        config = await pool.apply(spec())
        store = engines.open_store(pool.dsn, pool=config, datacenter=config.datacenters[0])
        try:
            issued = await store.allocate(TAG, 50)
        finally:
            await store.close()
        # A wakes up and finishes "its" deletion.
        with pytest.raises(errors.NebulaIdError):
            await reconcile.delete(ctx_a, "life", pool.name, drop=True)
        # An old drop that had passed its fence before B took over deletes by generation.
        assert await engines.drop_rows(pool.dsn, pool.ref, config.generation - 1) == 0
    assert await pool.config() is not None, "the deposed leader deleted the new pool"
    row = row_max(segment_db, pool)
    base = segment.datacenter_base(0, 5)
    assert row is not None
    assert row >= issued.end - base, "the deposed leader reset the new pool's counter"


async def test_a_lost_segment_row_does_not_restart_at_one(
    pool: Pool, segment_db: EngineServer
) -> None:
    await pool.apply(spec())
    load = Load()
    async with pool.sidecar("first") as first:
        await eventually_async(lambda: serving(first), timeout=10, what="the sidecar to serve")
        load.start(first)
        await eventually_async(lambda: len(load.segment) >= 10, 30, what="segment IDs")
        await load.stop()
    issued = set(load.segment)
    assert issued
    # A restore (or a promoted async replica, or a fresh DR database) lost the row; the
    # operator's next reconcile provisions it again, at 1.
    segment_db.execute(f"DELETE FROM nebula_segments WHERE pool = '{pool.ref}'")
    second_load = Load()
    async with pool.sidecar("second") as second:
        await eventually_async(lambda: serving(second), timeout=10, what="the sidecar to serve")
        second_load.start(second)
        await asyncio.sleep(0.3)
        config = await pool.config()
        assert config is not None
        await engines.provision(pool.dsn, config, config.datacenters[0])
        await eventually_async(
            lambda: len(second_load.segment) >= 10,
            30,
            what=f"segment IDs after the loss (refusals: {second_load.refusals})",
        )
        await second_load.stop()
    again = set(second_load.segment)
    assert again, f"no segment ID after the loss: {second_load.refusals}"
    assert not issued & again, f"{len(issued & again)} segment IDs issued twice"
    assert min(again) > max(issued)


async def test_sidecars_stop_when_their_pool_is_deleted_and_resume_in_its_next_life(
    pool: Pool,
) -> None:
    await pool.apply(spec())
    async with pool.sidecar("s") as sidecar:
        await eventually_async(lambda: serving(sidecar), timeout=10, what="the sidecar to serve")
        before = sidecar.snowflake.next_ids(10) + await sidecar.segments.next_ids(TAG, 10)
        async with pool.client() as client:
            await pool_store.delete(client, pool.keys)
        # The watch sees the deletion at once: nothing is issued for a pool that is gone.
        await eventually_async(
            lambda: (
                sidecar.snowflake.ready_reason() == "not_ready"
                and sidecar.segments.ready_reason() == "not_ready"
            ),
            timeout=2,
            what="both sources to stop",
        )
        with pytest.raises(errors.NotReady, match="deleted"):
            sidecar.snowflake.next_ids(1)
        with pytest.raises(errors.NotReady, match="deleted"):
            await sidecar.segments.next_ids(TAG, 1)
        async with pool.client() as client:
            assert (await client.range(pool.keys.workers_prefix, prefix=True)).count == 0
        # Created again with the same spec: the same process serves its next life.
        await pool.apply(spec())
        await eventually_async(
            lambda: serving(sidecar) and sidecar.segments.ready_reason() is None,
            timeout=10,
            what="the sidecar to serve again",
        )
        after = sidecar.snowflake.next_ids(10) + await sidecar.segments.next_ids(TAG, 10)
    assert not set(before) & set(after)
