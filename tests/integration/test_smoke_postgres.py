"""Smoke test: the real PostgreSQL hands out ranges the way Segment relies on.

One atomic ``UPDATE ... RETURNING`` per range: twenty concurrent clients each
get a distinct value and no value is lost.  The two datacenter clusters are
independent servers.
"""

from __future__ import annotations

import asyncio

import asyncpg

from tests.support.postgres import PostgresCluster

CLIENTS = 20
ROUNDS = 5


async def _take(dsn: str, rounds: int) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        taken = []
        for _ in range(rounds):
            value = await conn.fetchval(
                "UPDATE smoke_alloc SET max_id = max_id + 10 WHERE tag = 'smoke' RETURNING max_id"
            )
            taken.append(int(value))
        return taken
    finally:
        await conn.close()


async def test_update_returning_hands_each_concurrent_client_a_distinct_value(
    postgres: PostgresCluster,
) -> None:
    dsn = postgres.create_database("smoke_update_returning")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE smoke_alloc (tag text PRIMARY KEY, max_id bigint)")
        await conn.execute("INSERT INTO smoke_alloc VALUES ('smoke', 0)")
    finally:
        await conn.close()

    results = await asyncio.gather(*(_take(dsn, ROUNDS) for _ in range(CLIENTS)))

    values = [v for per_client in results for v in per_client]
    assert len(values) == CLIENTS * ROUNDS
    assert len(set(values)) == len(values), "a value was handed out twice"
    assert sorted(values) == list(range(10, 10 * CLIENTS * ROUNDS + 1, 10))


async def test_the_two_datacenters_are_separate_servers(
    postgres_dcs: dict[str, PostgresCluster],
) -> None:
    assert set(postgres_dcs) == {"dc-a", "dc-b"}
    ports = set()
    for name, cluster in postgres_dcs.items():
        conn = await asyncpg.connect(cluster.dsn())
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS smoke_dc (name text)")
            await conn.execute("INSERT INTO smoke_dc VALUES ($1)", name)
            rows = await conn.fetch("SELECT name FROM smoke_dc")
            ports.add(await conn.fetchval("SHOW port"))
        finally:
            await conn.close()
        assert [r["name"] for r in rows] == [name]
    assert len(ports) == 2
