"""Moving to nebula-id without a repeat: `nebula-id pool import` against real Leaf tables
and sequences on both engines, and a declared Snowflake ceiling against real etcd.

Each test applies a pool with the real CLI, runs the real import, then draws
IDs under load (8 concurrent consumers per datacenter through the segment
allocator the sidecar uses) and checks that every one is above what the old
system issued, in every datacenter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from nebula_id import errors
from nebula_id.clock import SystemClock
from nebula_id.core import keys as pool_keys
from nebula_id.core import layout as layouts
from nebula_id.core import pool as pools
from nebula_id.core import poolspec, segment
from nebula_id.etcd import client as etcd
from nebula_id.etcd import floors
from nebula_id.etcd import pools as pool_store
from nebula_id.etcd import source as sources
from nebula_id.storage import engines
from tests.support import sidecar as sidecars
from tests.support.engines import EngineServer
from tests.support.services import MariaDBServer, PostgresCluster

pytestmark = pytest.mark.integration

# The schema from Leaf's README.
LEAF_SCHEMA = """
CREATE TABLE leaf_alloc (
  biz_tag varchar(128) NOT NULL DEFAULT '',
  max_id bigint(20) NOT NULL DEFAULT '1',
  step int(11) NOT NULL,
  description varchar(256) DEFAULT NULL,
  update_time timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (biz_tag)
) ENGINE=InnoDB
"""

# datacenterBits 20: each datacenter's slice is 2**43 (about 8.8e12) IDs long.
DC_BITS = 20
SLICE = 1 << (63 - DC_BITS)
# 36 timestamp bits last about two years: start them a day ago.
EPOCH = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86_400))


def pool_yaml(name: str, dc_ids: tuple[int, ...], tags: tuple[str, ...]) -> str:
    dcs = "\n".join(f"    - name: dc-{i}\n      id: {i}" for i in dc_ids)
    tag_lines = "\n".join(f"      - name: {t}\n        step: 500" for t in tags)
    return f"""
apiVersion: nebula-id.io/v1alpha1
kind: NebulaIdPool
metadata:
  name: {name}
spec:
  algorithm: segment
  snowflake:
    epoch: "{EPOCH}"
    datacenterBits: {DC_BITS}
    workerBits: 2
    timestampBits: 36
    sequenceBits: 5
  datacenters:
{dcs}
  segment:
    tags:
{tag_lines}
"""


class Cli:
    """The real `nebula-id pool` console script against one etcd key prefix."""

    def __init__(self, endpoint: str, tmp_path: Path) -> None:
        self.prefix = f"/test-migration/{uuid.uuid4()}"
        self.endpoint = endpoint
        self.tmp_path = tmp_path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "nebula-id"), "pool", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")} | {
            "NEBULA_ETCD_ENDPOINTS": self.endpoint,
            "NEBULA_ETCD_PREFIX": self.prefix,
        }
        return subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=120, check=False
        )

    def apply(self, text: str, urls: str) -> None:
        path = self.tmp_path / f"pool-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(text)
        done = self.run("apply", "-f", str(path), "--database-urls", urls)
        assert done.returncode == 0, done.stderr

    def keys(self, name: str) -> pool_keys.PoolKeys:
        return pool_keys.PoolKeys("default", name, prefix=self.prefix)

    async def config(self, name: str) -> pools.PoolConfig:
        async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(self.endpoint,))) as client:
            stored = await pool_store.get(client, self.keys(name))
        assert stored is not None
        return stored.config

    async def floor(self, name: str, dc: int, tag: str) -> int | None:
        async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(self.endpoint,))) as client:
            return await floors.read_floor(client, self.keys(name), dc, tag)


@pytest.fixture
def cli(etcd_endpoint: str, tmp_path: Path) -> Cli:
    return Cli(etcd_endpoint, tmp_path)


def fresh_db(server: MariaDBServer | PostgresCluster) -> str:
    return server.create_database(f"m{uuid.uuid4().hex[:10]}")


async def draw_under_load(
    config: pools.PoolConfig, dsns: dict[str, str], tag: str, *, per_dc: int = 6000
) -> dict[str, list[int]]:
    """IDs of `tag` from every datacenter: 8 concurrent consumers each, small batches."""
    drawn: dict[str, list[int]] = {}
    for dc in config.datacenters:
        store = engines.open_store(dsns[dc.name], pool=config, datacenter=dc)
        allocator = segment.SegmentAllocator(
            store, [segment.Tag(t.name, 50, 50) for t in config.tags], clock=SystemClock()
        )
        ids: list[int] = []

        async def consume(
            allocator: segment.SegmentAllocator = allocator, ids: list[int] = ids
        ) -> None:
            while len(ids) < per_dc:
                ids.extend(await allocator.next_ids(tag, 37))

        try:
            await allocator.start()
            await asyncio.gather(*(consume() for _ in range(8)))
        finally:
            await allocator.close()
            await store.close()
        drawn[dc.name] = ids
    return drawn


def assert_all_above(drawn: dict[str, list[int]], old_max: int) -> None:
    every = [i for ids in drawn.values() for i in ids]
    assert len(every) == len(set(every)), "a segment ID repeated"
    lowest = {name: min(ids) for name, ids in drawn.items()}
    print(f"old max {old_max}; lowest new ID per datacenter: {lowest}")
    assert all(low > old_max for low in lowest.values())


async def test_import_from_leaf_continues_above_every_leaf_id(
    cli: Cli, mariadb: MariaDBServer, postgres: PostgresCluster
) -> None:
    leaf = fresh_db(mariadb)
    mariadb.sql(LEAF_SCHEMA, db=leaf.rsplit("/", 1)[1])
    # orders: above dc-1's base, inside its slice; users: below every base but dc 0's.
    orders_max = SLICE + 15_000_000
    mariadb.sql(
        "INSERT INTO leaf_alloc (biz_tag, max_id, step, description) VALUES "
        f"('orders', {orders_max}, 2000, 'orders'), ('users', 5000, 1000, 'users')",
        db=leaf.rsplit("/", 1)[1],
    )
    # One datacenter on MariaDB, one on PostgreSQL.
    dsns = {"dc-1": fresh_db(mariadb), "dc-3": fresh_db(postgres)}
    urls = ",".join(f"{k}={v}" for k, v in dsns.items())
    cli.apply(pool_yaml("leaf", (1, 3), ("orders", "users")), urls)

    first = cli.run("import", "leaf", "--from-leaf", leaf, "--database-urls", urls)
    assert first.returncode == 0, first.stderr
    print(first.stdout)
    counter = orders_max + 1 - SLICE
    assert f"tag orders in dc-1 (id 1): raised counter 1 -> {counter}" in first.stdout
    # dc-3's slice starts above every Leaf ID: nothing to raise there.
    assert "tag orders in dc-3 (id 3): unchanged" in first.stdout
    assert "tag users in dc-1 (id 1): unchanged" in first.stdout
    assert await cli.floor("leaf", 1, "orders") == counter

    # Idempotent: a second run changes nothing and says so.
    again = cli.run("import", "leaf", "--from-leaf", leaf, "--database-urls", urls)
    assert again.returncode == 0, again.stderr
    assert "raised" not in again.stdout
    assert again.stdout.count("unchanged") == 4

    config = await cli.config("leaf")
    assert_all_above(await draw_under_load(config, dsns, "orders"), orders_max)
    assert_all_above(await draw_under_load(config, dsns, "users", per_dc=2000), 5000)

    # A lower value never lowers a floor.
    mariadb.sql("UPDATE leaf_alloc SET max_id = 10", db=leaf.rsplit("/", 1)[1])
    lower = cli.run("import", "leaf", "--from-leaf", leaf, "--database-urls", urls)
    assert lower.returncode == 0, lower.stderr
    assert "raised" not in lower.stdout
    # etcd follows the row, which the draws above moved on; neither went down.
    row = mariadb.sql(
        "SELECT max_id FROM nebula_segments WHERE tag = 'orders'", db=dsns["dc-1"].rsplit("/", 1)[1]
    )
    assert await cli.floor("leaf", 1, "orders") == int(row) > counter


async def test_an_impossible_import_is_refused_and_writes_nothing(
    cli: Cli, mariadb: MariaDBServer
) -> None:
    leaf = fresh_db(mariadb)
    db = leaf.rsplit("/", 1)[1]
    mariadb.sql(LEAF_SCHEMA, db=db)
    mariadb.sql(
        f"INSERT INTO leaf_alloc (biz_tag, max_id, step) VALUES ('orders', {SLICE + 7}, 1000)",
        db=db,
    )
    dsns = {"dc-0": fresh_db(mariadb), "dc-2": fresh_db(mariadb)}
    urls = ",".join(f"{k}={v}" for k, v in dsns.items())
    cli.apply(pool_yaml("refused", (0, 2), ("orders",)), urls)

    refused = cli.run("import", "refused", "--from-leaf", leaf, "--database-urls", urls)
    assert refused.returncode == 2
    assert "import refused, nothing written" in refused.stderr
    assert "datacenter dc-0" in refused.stderr
    assert "can never issue an ID above" in refused.stderr
    assert await cli.floor("refused", 2, "orders") is None
    counters = mariadb.sql("SELECT max_id FROM nebula_segments", db=dsns["dc-2"].rsplit("/", 1)[1])
    assert counters.split() == ["1"]  # provisioned by apply, never raised

    # A Leaf tag the pool lacks, or a datacenter without a URL, is refused too.
    mariadb.sql("INSERT INTO leaf_alloc (biz_tag, max_id, step) VALUES ('x', 1, 1)", db=db)
    only_dc2 = f"dc-2={dsns['dc-2']}"
    unknown = cli.run("import", "refused", "--from-leaf", leaf, "--database-urls", only_dc2)
    assert unknown.returncode == 2
    assert "tags x are not tags of pool default/refused" in unknown.stderr
    assert "no database URL for datacenters dc-0" in unknown.stderr


async def test_an_import_takes_the_higher_of_the_two_witnesses(
    cli: Cli, mariadb: MariaDBServer, segment_db: EngineServer
) -> None:
    """A row that went back (lost, restored) is raised to etcd's floor, not to Leaf's."""
    leaf = fresh_db(mariadb)
    mariadb.sql(LEAF_SCHEMA, db=leaf.rsplit("/", 1)[1])
    mariadb.sql(
        "INSERT INTO leaf_alloc (biz_tag, max_id, step) VALUES ('orders', 5000, 1000)",
        db=leaf.rsplit("/", 1)[1],
    )
    dsns = {"dc-0": fresh_db(segment_db.server)}
    urls = f"dc-0={dsns['dc-0']}"
    name = f"witness-{segment_db.engine}"
    cli.apply(pool_yaml(name, (0,), ("orders",)), urls)
    # Ranges up to 90000 were handed out; the row (at 1) lost them, etcd did not.
    async with etcd.EtcdClient(etcd.EtcdSettings(endpoints=(cli.endpoint,))) as client:
        await floors.raise_floor(client, cli.keys(name), 0, "orders", 90_000)

    done = cli.run("import", name, "--from-leaf", leaf, "--database-urls", urls)
    assert done.returncode == 0, done.stderr
    assert "tag orders in dc-0 (id 0): raised counter 1 -> 90000" in done.stdout
    assert await cli.floor(name, 0, "orders") == 90_000
    drawn = await draw_under_load(await cli.config(name), dsns, "orders", per_dc=500)
    assert_all_above(drawn, 90_000 - 1)


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
async def test_import_from_a_sequence_continues_above_it(
    cli: Cli, engine: str, request: pytest.FixtureRequest
) -> None:
    server = EngineServer(
        engine, request.getfixturevalue("postgres" if engine == "postgresql" else "mariadb")
    )
    old = fresh_db(server.server)
    old_db = old.rsplit("/", 1)[1]
    if engine == "postgresql":
        server.execute("CREATE SEQUENCE public.order_ids CACHE 20", db=old_db)
        server.execute("SELECT setval('public.order_ids', 777000)", db=old_db)
        server.execute("SELECT nextval('public.order_ids')", db=old_db)  # 777001
        # That session fetched 20 values into its cache (777001..777020); any of them
        # may still be used, and the import counts them all.
        name, current = "public.order_ids", 777_020
    else:
        server.execute(
            "CREATE TABLE orders (id bigint AUTO_INCREMENT PRIMARY KEY, note text) "
            "AUTO_INCREMENT = 777000",
            db=old_db,
        )
        server.execute("INSERT INTO orders (note) VALUES ('a'), ('b')", db=old_db)  # ..777001
        name, current = "orders", 777_001
    margin = 10_000
    dsns = {"dc-0": fresh_db(server.server), "dc-1": fresh_db(server.server)}
    urls = ",".join(f"{k}={v}" for k, v in dsns.items())
    pool = f"seq-{engine}"
    cli.apply(pool_yaml(pool, (0, 1), ("orders",)), urls)

    needs_margin = cli.run(
        "import", pool, "--from-sequence", old, "--sequence", name, "--tag", "orders",
        "--database-urls", urls,
    )  # fmt: skip
    assert needs_margin.returncode == 2
    assert "--margin" in needs_margin.stderr

    done = cli.run(
        "import", pool, "--from-sequence", old, "--sequence", name, "--tag", "orders",
        "--margin", str(margin), "--database-urls", urls,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert f"at {current}, plus margin {margin}" in done.stdout
    old_max = current + margin
    assert f"raised counter 1 -> {old_max + 1}" in done.stdout
    assert_all_above(await draw_under_load(await cli.config(pool), dsns, "orders"), old_max)


@pytest.mark.parametrize("declared", ["previousMaxId", "previousStoppedAt"])
async def test_a_declared_snowflake_ceiling_holds_for_every_worker(
    cli: Cli, declared: str, tmp_path: Path
) -> None:
    """Six leased workers in two datacenters, under load, issue only IDs above the old ones."""
    name = f"snow-{declared.lower()}"
    layout = poolspec.parse_spec({}, namespace="default", name=name).layout
    # Far enough ahead that the workers hold their leases before it, even on a busy machine.
    stop_ms = int(time.time() * 1000) + 4000
    # The old generator's highest possible ID in its last millisecond.
    old_max = layout.compose(
        timestamp_ms=stop_ms,
        datacenter=layout.max_datacenter,
        worker=layout.max_worker,
        sequence=layout.max_sequence,
    )
    value = str(old_max) if declared == "previousMaxId" else layouts.format_epoch(stop_ms)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""
apiVersion: nebula-id.io/v1alpha1
kind: NebulaIdPool
metadata:
  name: {name}
spec:
  snowflake:
    {declared}: "{value}"
  datacenters:
    - name: dc-a
      id: 0
    - name: dc-b
      id: 1
"""
    )
    applied = cli.run("apply", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    config = await cli.config(name)
    assert config.snowflake_issue_after_ms == stop_ms

    waits: list[str] = []
    drawn: list[int] = []

    async def draw(source: sources.LeasedSnowflake) -> None:
        while len(drawn) < 60_000:
            try:
                drawn.extend(source.next_ids(100))
            except errors.NotReady as e:
                waits.append(e.message)
                await asyncio.sleep(min(e.retry_after or 0.01, 0.05))
            await asyncio.sleep(0)

    async with contextlib.AsyncExitStack() as stack:
        holders = [
            await stack.enter_async_context(
                sidecars.open_snowflake(
                    sidecars.cluster_settings(
                        cli.endpoint,
                        pool=f"default/{name}",
                        prefix=cli.prefix,
                        datacenter=dc,
                        data_dir=tmp_path / f"{dc}-{i}",
                        pod=f"{dc}-{i}",
                    ),
                    config,
                    clock=SystemClock(),
                )
            )
            for dc in ("dc-a", "dc-b")
            for i in range(3)
        ]
        async with asyncio.timeout(30):
            await asyncio.gather(*(draw(h) for h in holders))
    lowest = min(drawn)
    print(
        f"{declared}: old max {old_max}, lowest new {lowest}, {len(waits)} waits, e.g. {waits[:1]}"
    )
    assert len(drawn) == len(set(drawn))
    assert lowest > old_max
    assert any("generator this pool replaces" in w for w in waits)
    nodes = {(p.datacenter, p.worker) for p in map(layout.parse, drawn)}
    assert {dc for dc, _ in nodes} == {0, 1}
