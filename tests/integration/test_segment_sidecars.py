"""Eight real `nebula-id serve` processes share one tag in one PostgreSQL: 1 M IDs, no repeats.

Small steps make ranges switch often; two sidecars are restarted half-way (one
with kill -9), and every sidecar's IDs still strictly increase across its
restart, because a new process only ever gets ranges above everything the
database handed out before.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.support import http, processes
from tests.support.services import PostgresCluster
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")
SIDECARS = 8
TOTAL = 1_000_000
BATCH = 997  # odd, so batches straddle range boundaries


class Sidecar:
    def __init__(self, index: int, tmp_path: pathlib.Path, dsn: str) -> None:
        self.index = index
        self.data_dir = tmp_path / f"data-{index}"
        self.dsn = dsn
        self.tmp_path = tmp_path
        self.port = processes.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = self._spawn(0)
        self.starts = 1

    def _spawn(self, generation: int) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
        env |= {
            "NEBULA_DATABASE_URL": self.dsn,
            "NEBULA_TAGS": "orders:500:4000",
            "NEBULA_ALGORITHM": "segment",
            "NEBULA_LOG_LEVEL": "warning",
        }
        return processes.spawn(
            [NEBULA_ID, "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            log_path=self.tmp_path / f"sidecar-{self.index}-{generation}.log",
            env=env,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        processes.wait_until(
            lambda: http.get(self.base + "/readyz", timeout=1.0)[0] == 200,
            what=f"sidecar {self.index}",
            proc=self.proc,
            log_path=self.tmp_path / f"sidecar-{self.index}-{self.starts - 1}.log",
            timeout=timeout,
        )

    def restart(self, *, hard: bool) -> None:
        if hard:
            processes.kill(self.proc)
        else:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = self._spawn(self.starts)
        self.starts += 1


@pytest.fixture
def sidecars(tmp_path: pathlib.Path, postgres: PostgresCluster) -> Iterator[list[Sidecar]]:
    dsn = postgres.create_database("eight_sidecars")
    started = [Sidecar(i, tmp_path, dsn) for i in range(SIDECARS)]
    try:
        for sidecar in started:
            sidecar.wait_ready()
        yield started
    finally:
        for sidecar in started:
            processes.stop(sidecar.proc, timeout=5)


async def fetch(session: aiohttp.ClientSession, sidecar: Sidecar, count: int) -> list[int]:
    """One request, retried while the sidecar restarts."""

    async def once() -> list[int] | None:
        async with session.get(
            f"{sidecar.base}/v1/ids/segment/orders", params={"count": str(count)}
        ) as response:
            if response.status == 200:
                body = await response.json()
                return [int(v) for v in body["ids"]]
            assert response.status == 503, await response.text()
            return None

    return await eventually_async(
        once,
        20,
        what=f"sidecar {sidecar.index} to serve",
        ignoring=(aiohttp.ClientConnectionError,),
    )


async def serve(sidecars: list[Sidecar]) -> dict[int, list[int]]:
    per_sidecar: dict[int, list[int]] = {s.index: [] for s in sidecars}
    share = TOTAL // len(sidecars)
    restarted = asyncio.Event()

    async def one(session: aiohttp.ClientSession, sidecar: Sidecar) -> None:
        got = per_sidecar[sidecar.index]
        while len(got) < share:
            # One request in flight per sidecar, so arrival order is issue order.
            got += await fetch(session, sidecar, min(BATCH, share - len(got)))
            if sidecar.index < 2 and len(got) >= share // 2 and sidecar.starts == 1:
                await asyncio.to_thread(sidecar.restart, hard=sidecar.index == 0)
                restarted.set()

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, s) for s in sidecars))
    assert restarted.is_set()
    return per_sidecar


def test_eight_sidecars_serve_a_million_ids_without_repeats(sidecars: list[Sidecar]) -> None:
    started = time.monotonic()
    per_sidecar = asyncio.run(serve(sidecars))
    elapsed = time.monotonic() - started
    everything = [v for ids in per_sidecar.values() for v in ids]
    print(f"\n{len(everything)} segment IDs from {SIDECARS} sidecars in {elapsed:.1f} s")
    assert len(everything) == TOTAL
    assert len(set(everything)) == TOTAL, "a segment ID was issued twice"
    for index, ids in per_sidecar.items():
        assert all(a < b for a, b in itertools.pairwise(ids)), (
            f"sidecar {index}'s IDs do not strictly increase"
        )
    assert sidecars[0].starts == 2
    assert sidecars[1].starts == 2
