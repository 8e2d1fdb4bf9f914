"""Real `nebula-id serve` processes holding worker IDs in a real etcd.

Each test starts sidecars as subprocesses against the session etcd (or a private one when
etcd is stopped), under a private key prefix, with short TTLs so that expiry is quick.
Every Snowflake ID any client received is collected and checked for duplicates.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nebula_id.core import keys as pool_keys
from nebula_id.core import layout as layouts
from nebula_id.core import lease as leases
from nebula_id.etcd import claims
from nebula_id.etcd import client as etcd
from nebula_id.etcd import pools as pool_store
from tests.support import processes
from tests.support.fixtures import EtcdFactory
from tests.support.waiting import eventually_async

NEBULA_ID = str(Path(sys.executable).parent / "nebula-id")
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
TTL = 3
TIMING = leases.LeaseTiming(TTL)


class Sidecar:
    """One `nebula-id serve` process; restartable on the same port and data dir."""

    def __init__(self, pool: Pool, name: str, *, extra_env: dict[str, str] | None = None) -> None:
        self.pool = pool
        self.name = name
        self.port = processes.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = pool.workdir / name
        self.log_path = pool.workdir / f"{name}.log"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sidecar:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
        env |= {
            "NEBULA_ETCD_ENDPOINTS": self.pool.endpoint,
            "NEBULA_ETCD_PREFIX": self.pool.keys.prefix,
            "NEBULA_POOL": f"{self.pool.keys.namespace}/{self.pool.keys.name}",
            "NEBULA_DATACENTER": "dc-a",
            "NEBULA_PORT": str(self.port),
            "NEBULA_DATA_DIR": str(self.data_dir),
            "NEBULA_POD_NAME": self.name,
            "NEBULA_POD_UID": str(uuid.uuid4()),
            "NEBULA_LOG_LEVEL": "info",
        }
        env |= self.extra_env
        self.proc = processes.spawn([NEBULA_ID, "serve"], log_path=self.log_path, env=env)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        processes.kill(self.proc)
        self.proc = None

    def terminate(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc)
            self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self) -> str:
        return processes.log_tail(self.log_path)


class Pool:
    """A pool under a private etcd prefix, and the sidecars serving it."""

    def __init__(self, endpoint: str, workdir: Path, *, worker_bits: int = 5) -> None:
        self.endpoint = endpoint
        self.workdir = workdir
        self.keys = pool_keys.PoolKeys("ns", "pool", prefix=f"/test-sidecars/{uuid.uuid4()}")
        self.worker_bits = worker_bits
        self.layout = layouts.SnowflakeLayout(
            timestamp_bits=46 - worker_bits, datacenter_bits=5, worker_bits=worker_bits
        )
        self.sidecars: list[Sidecar] = []

    def client(self) -> etcd.EtcdClient:
        return etcd.EtcdClient(etcd.EtcdSettings(endpoints=(self.endpoint,), timeout=2.0))

    async def apply(self) -> None:
        spec = {
            "snowflake": {
                "workerBits": self.worker_bits,
                "datacenterBits": 5,
                "timestampBits": 46 - self.worker_bits,
            },
            "datacenters": [{"name": "dc-a", "id": 2}],
            "lease": {"ttlSeconds": TTL},
        }
        async with self.client() as c:
            await pool_store.apply(c, self.keys, spec)

    def sidecar(self, name: str, **kwargs: Any) -> Sidecar:
        sidecar = Sidecar(self, name, **kwargs)
        self.sidecars.append(sidecar)
        return sidecar

    async def claims(self) -> dict[int, int]:
        """worker -> lease of every claim."""
        async with self.client() as c:
            found = await c.range(self.keys.workers_of(2), prefix=True)
        return {int(kv.key.rsplit("/", 1)[1]): kv.lease for kv in found.kvs}

    async def mark(self, worker: int) -> int:
        async with self.client() as c:
            kv = await c.get(self.keys.clock(2, worker))
        assert kv is not None, f"no high-water mark for worker {worker}"
        return claims.HighWaterMark.from_json(kv.value).ms


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        yield s


@pytest.fixture
def stop_all() -> Iterator[list[Pool]]:
    pools: list[Pool] = []
    yield pools
    for pool in pools:
        for sidecar in pool.sidecars:
            sidecar.terminate()


async def make_pool(
    endpoint: str, tmp_path: Path, stop_all: list[Pool], *, worker_bits: int = 5
) -> Pool:
    pool = Pool(endpoint, tmp_path, worker_bits=worker_bits)
    await pool.apply()
    stop_all.append(pool)
    return pool


async def get(
    session: aiohttp.ClientSession, sidecar: Sidecar, path: str
) -> tuple[int, dict[str, Any]]:
    """(status, JSON body); (0, {}) when nothing answers."""
    try:
        async with session.get(sidecar.url + path) as response:
            return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
        return 0, {}


async def wait_ready(session: aiohttp.ClientSession, sidecar: Sidecar, *, within: float) -> None:
    async def ready() -> bool:
        assert sidecar.alive, f"{sidecar.name} exited:\n{sidecar.log_tail()}"
        status, _ = await get(session, sidecar, "/readyz")
        return status == 200

    await eventually_async(ready, timeout=within, what=f"{sidecar.name} to be ready")


async def worker_of(session: aiohttp.ClientSession, sidecar: Sidecar) -> int:
    status, info = await get(session, sidecar, "/v1/info")
    assert status == 200, info
    worker = info["snowflake"]["worker"]
    assert isinstance(worker, int), info
    return worker


async def snowflakes(session: aiohttp.ClientSession, sidecar: Sidecar, count: int) -> list[int]:
    status, body = await get(session, sidecar, f"/v1/ids/snowflake?count={count}")
    assert status == 200, body
    return [int(i) for i in body["ids"]]


# --- the tests ---------------------------------------------------------------------------


async def test_twenty_sidecars_started_at_once_get_twenty_distinct_worker_ids(
    etcd_endpoint: str, tmp_path: Path, stop_all: list[Pool], session: aiohttp.ClientSession
) -> None:
    pool = await make_pool(etcd_endpoint, tmp_path, stop_all)
    sidecars = [pool.sidecar(f"s{i}").start() for i in range(20)]
    await asyncio.gather(*(wait_ready(session, s, within=90) for s in sidecars))

    workers = [await worker_of(session, s) for s in sidecars]
    assert len(set(workers)) == 20
    held = await pool.claims()
    assert sorted(held) == sorted(workers)
    assert len(set(held.values())) == 20  # one lease each

    ids: list[int] = []
    for sidecar, worker in zip(sidecars, workers, strict=True):
        batch = await snowflakes(session, sidecar, 200)
        assert {pool.layout.parse(i).worker for i in batch} == {worker}
        assert {pool.layout.parse(i).datacenter for i in batch} == {2}
        ids += batch
    assert len(set(ids)) == len(ids) == 20 * 200
    print(f"20 sidecars: worker IDs {sorted(workers)}")


async def test_kill_9_frees_the_id_after_the_ttl_and_the_next_holder_waits_past_the_mark(
    etcd_endpoint: str, tmp_path: Path, stop_all: list[Pool], session: aiohttp.ClientSession
) -> None:
    pool = await make_pool(etcd_endpoint, tmp_path, stop_all)
    first = pool.sidecar("first").start()
    await wait_ready(session, first, within=30)
    assert await worker_of(session, first) == 0
    before = await snowflakes(session, first, 1000)

    first.kill9()
    killed = time.monotonic()
    mark = await pool.mark(0)  # the mark it persisted ahead of its clock
    assert mark > max(pool.layout.parse(i).timestamp_ms for i in before)
    assert 0 in await pool.claims()  # still held: the lease has not expired yet

    async def freed() -> bool:
        return 0 not in await pool.claims()

    await eventually_async(freed, timeout=TTL + 3, what="the killed sidecar's claim to expire")
    freed_after = time.monotonic() - killed
    assert freed_after >= TTL - 1.0, f"freed after {freed_after:.2f} s, before the TTL"

    second = pool.sidecar("second").start()
    await wait_ready(session, second, within=30)
    ready_wall_ms = time.time_ns() // 1_000_000
    assert await worker_of(session, second) == 0
    after = await snowflakes(session, second, 1000)
    assert min(pool.layout.parse(i).timestamp_ms for i in after) > mark
    assert ready_wall_ms > mark
    assert min(after) > max(before)
    print(
        f"kill -9: worker 0 freed {freed_after:.2f} s after the kill (TTL {TTL} s); the new "
        f"holder served only after the mark ({mark}), its first ID is "
        f"{pool.layout.parse(min(after)).timestamp_ms - mark} ms past it"
    )


async def test_etcd_stopped_fences_snowflake_keeps_uuids_and_resumes(
    etcd_factory: EtcdFactory, tmp_path: Path, stop_all: list[Pool], session: aiohttp.ClientSession
) -> None:
    server = etcd_factory()
    pool = await make_pool(server.endpoint, tmp_path, stop_all)
    sidecar = pool.sidecar("s").start()
    await wait_ready(session, sidecar, within=30)

    issued: list[int] = []
    issued += await snowflakes(session, sidecar, 500)
    server.kill()
    stopped = time.monotonic()
    stopped_ms = time.time_ns() // 1_000_000

    async def refused() -> dict[str, Any] | None:
        status, body = await get(session, sidecar, "/v1/ids/snowflake?count=10")
        if status == 200:
            issued.extend(int(i) for i in body["ids"])
            return None
        assert status == 503, body
        return body

    # A generous ceiling for the test to see it; the fence itself is checked below on
    # the IDs' own timestamps, which a slow test process cannot delay.
    refusal = await eventually_async(refused, TTL + 10, what="Snowflake to be refused")
    first_refusal = time.monotonic() - stopped
    assert refusal["error"]["reason"] == "lease_lost"
    # The last keepalive left before the kill: no ID may carry a later time than its
    # deadline (TTL - margin after it), give or take the millisecond of a timestamp.
    latest_ms = max(pool.layout.parse(i).timestamp_ms for i in issued)
    fence_ms = stopped_ms + (TTL - TIMING.margin) * 1000
    assert latest_ms <= fence_ms + 1, f"an ID {latest_ms - fence_ms} ms past the lease deadline"

    status, body = await get(session, sidecar, "/v1/ids/uuid7")
    assert status == 200, body
    status, body = await get(session, sidecar, "/v1/ids/uuid4?count=5")
    assert status == 200, body
    assert len(body["ids"]) == 5
    status, body = await get(session, sidecar, "/readyz")
    assert status == 503
    assert "lease_lost" in json.dumps(body)

    await asyncio.sleep(TTL)  # down for longer than the TTL
    server.start()
    restarted = time.monotonic()
    await wait_ready(session, sidecar, within=20)
    resumed_after = time.monotonic() - restarted
    issued += await snowflakes(session, sidecar, 500)
    assert len(set(issued)) == len(issued)
    assert issued == sorted(issued)
    print(
        f"etcd stopped: last ID {latest_ms - stopped_ms} ms after the kill, 503 lease_lost "
        f"seen after {first_refusal:.2f} s (TTL {TTL} s, margin {TIMING.margin} s); "
        f"serving again {resumed_after:.2f} s after etcd restarted; "
        f"{len(issued)} Snowflake IDs, no repeats"
    )


async def test_exhausted_worker_space_is_reported_and_a_freed_id_is_taken(
    etcd_endpoint: str, tmp_path: Path, stop_all: list[Pool], session: aiohttp.ClientSession
) -> None:
    pool = await make_pool(etcd_endpoint, tmp_path, stop_all, worker_bits=2)
    holders = [pool.sidecar(f"s{i}").start() for i in range(4)]
    await asyncio.gather(*(wait_ready(session, s, within=60) for s in holders))
    fifth = pool.sidecar("fifth").start()

    async def exhausted() -> bool:
        assert fifth.alive, fifth.log_tail()
        status, body = await get(session, fifth, "/readyz")
        return status == 503 and "worker_ids_exhausted" in json.dumps(body)

    await eventually_async(exhausted, timeout=30, what="the fifth sidecar to report exhaustion")
    status, body = await get(session, fifth, "/v1/ids/snowflake")
    assert status == 503
    assert body["error"]["reason"] == "worker_ids_exhausted"
    assert "worker IDs" in body["error"]["message"]
    async with session.get(fifth.url + "/metrics") as response:
        assert "nebula_id_worker_ids_exhausted 1.0" in await response.text()

    leaving = holders[1]
    freed = await worker_of(session, leaving)
    leaving.terminate()  # graceful: the ID is free at once
    await wait_ready(session, fifth, within=10)
    assert await worker_of(session, fifth) == freed
    ids = await snowflakes(session, fifth, 100)
    assert {pool.layout.parse(i).worker for i in ids} == {freed}


def _faketime_env(offset_file: Path) -> dict[str, str]:
    assert LIBFAKETIME.exists(), "libfaketime is missing: apt-get install -y faketime"
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # lease deadlines run on the real monotonic clock
    }


async def test_clock_moved_back_in_a_sidecar_process_never_repeats_an_id(
    etcd_endpoint: str, tmp_path: Path, stop_all: list[Pool], session: aiohttp.ClientSession
) -> None:
    """libfaketime moves the wall clock of a running sidecar back, then a restarted one."""
    pool = await make_pool(etcd_endpoint, tmp_path, stop_all)
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    sidecar = pool.sidecar("s", extra_env=_faketime_env(offset)).start()
    await wait_ready(session, sidecar, within=30)
    issued = await snowflakes(session, sidecar, 1000)

    # 1. The running sidecar's clock jumps back 2 s: it refuses, then serves again.
    offset.write_text("-2s\n")
    moved = time.monotonic()
    statuses: list[tuple[int, str]] = []

    async def refused_then_served() -> bool:
        status, body = await get(session, sidecar, "/v1/ids/snowflake?count=100")
        if status == 200:
            issued.extend(int(i) for i in body["ids"])
            return bool(statuses)
        statuses.append((status, body["error"]["reason"]))
        return False

    await eventually_async(refused_then_served, 60, what="a refusal, then IDs again", interval=0.02)
    refused_running = time.monotonic() - moved
    assert statuses
    assert {reason for _, reason in statuses} <= {"clock_moved_backward", "not_ready"}
    assert statuses[0] == (503, "clock_moved_backward")

    # 2. kill -9, then a new sidecar starts with its clock 5 s behind.
    sidecar.kill9()
    killed = time.monotonic()
    mark = await pool.mark(0)

    async def freed() -> bool:
        return 0 not in await pool.claims()

    await eventually_async(freed, timeout=TTL + 3, what="worker 0 to be free again")
    offset.write_text("-5s\n")
    restarted = pool.sidecar("restarted", extra_env=_faketime_env(offset)).start()
    await wait_ready(session, restarted, within=TTL + 20)
    waited_restart = time.monotonic() - killed
    assert await worker_of(session, restarted) == 0
    after = await snowflakes(session, restarted, 1000)
    assert min(pool.layout.parse(i).timestamp_ms for i in after) > mark
    issued += after
    assert len(set(issued)) == len(issued)
    assert issued == sorted(issued)
    print(
        f"clock 2 s back in a running sidecar: refused for {refused_running:.2f} s "
        f"({len(statuses)} refusals, first {statuses[0][1]}); kill -9 then restart with the "
        f"clock 5 s behind: worker 0 served again {waited_restart:.2f} s after the kill "
        f"(TTL {TTL} s + waiting past the mark)"
    )


async def test_one_million_ids_from_eight_sidecars_killed_and_restarted_at_random(
    etcd_endpoint: str, tmp_path: Path, stop_all: list[Pool], session: aiohttp.ClientSession
) -> None:
    target = 1_000_000
    pool = await make_pool(etcd_endpoint, tmp_path, stop_all)
    sidecars = [pool.sidecar(f"s{i}").start() for i in range(8)]
    await asyncio.gather(*(wait_ready(session, s, within=60) for s in sidecars))

    received: list[int] = []
    refusals: dict[str, int] = {}
    kills = {"kill -9": 0, "SIGTERM": 0}
    done = asyncio.Event()
    rng = random.Random(6)
    started = time.monotonic()

    async def client(sidecar: Sidecar) -> None:
        while not done.is_set():
            # Batches of mixed sizes, paced so that the kills land mid-stream.
            status, body = await get(
                session, sidecar, f"/v1/ids/snowflake?count={rng.randint(1, 400)}"
            )
            if status == 200:
                received.extend(int(i) for i in body["ids"])
                if len(received) >= target and sum(kills.values()) >= 15:
                    done.set()
                await asyncio.sleep(0.005)
            else:
                reason = body.get("error", {}).get("reason", "no answer") if body else "no answer"
                refusals[reason] = refusals.get(reason, 0) + 1
                await asyncio.sleep(0.05)
            assert time.monotonic() - started < 240, f"only {len(received)} IDs in 240 s"

    async def chaos() -> None:
        while not done.is_set():
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            victim = rng.choice(sidecars)
            if rng.random() < 0.7:
                victim.kill9()
                kills["kill -9"] += 1
            else:
                await asyncio.to_thread(victim.terminate)
                kills["SIGTERM"] += 1
            victim.start()

    tasks = [asyncio.create_task(client(s)) for s in sidecars]
    chaos_task = asyncio.create_task(chaos())
    try:
        await asyncio.wait_for(done.wait(), 260)
    finally:
        chaos_task.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, chaos_task, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception():
            raise task.exception()  # type: ignore[misc]

    elapsed = time.monotonic() - started
    duplicates = len(received) - len(set(received))
    workers = {pool.layout.parse(i).worker for i in received}
    print(
        f"uniqueness: {len(received)} Snowflake IDs from 8 sidecars in {elapsed:.1f} s, "
        f"{duplicates} duplicates; {kills['kill -9']} kill -9 and {kills['SIGTERM']} SIGTERM "
        f"restarts; {len(workers)} worker IDs used; refusals while restarting: {refusals}"
    )
    assert len(received) >= target
    assert duplicates == 0
    assert sum(kills.values()) >= 15


async def test_a_sidecar_authenticates_to_etcd_with_user_and_password(
    etcd_factory: EtcdFactory, tmp_path: Path, stop_all: list[Pool], session: aiohttp.ClientSession
) -> None:
    server = etcd_factory()
    pool = await make_pool(server.endpoint, tmp_path, stop_all)
    for path, body in [
        ("/v3/auth/user/add", {"name": "root", "password": "s3cret"}),
        ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ("/v3/auth/enable", {}),
    ]:
        async with session.post(server.endpoint + path, json=body) as response:
            assert response.status == 200, await response.text()

    anonymous = pool.sidecar("anonymous").start()
    assert await asyncio.to_thread(anonymous.proc.wait, 30) != 0  # type: ignore[union-attr]
    assert "etcd refused" in anonymous.log_tail()

    sidecar = pool.sidecar(
        "authenticated",
        extra_env={"NEBULA_ETCD_USERNAME": "root", "NEBULA_ETCD_PASSWORD": "s3cret"},
    ).start()
    await wait_ready(session, sidecar, within=30)
    assert await worker_of(session, sidecar) == 0
    assert len(set(await snowflakes(session, sidecar, 100))) == 100
