"""Segment IDs on real PostgreSQL and MariaDB: in process and through the sidecar.

Starts a throwaway PostgreSQL and MariaDB (the test suite's `PostgresCluster`
and `MariaDBServer`), then measures, in one run, each engine next to the other
(interleaved repeats, medians, and the MariaDB/PostgreSQL ratio):

* in process: `SegmentAllocator` over the engine's store, one ID per call
  and batches of 1000, against `SnowflakeGenerator.next_id` as the peer;
* raw range allocations (`allocate`, one atomic UPDATE each) from 1 and 8
  concurrent clients: ranges/s and p99;
* latency per call around range switches (fixed small step, so there are
  hundreds of switches): p50 / p99 / max of all calls against the calls that
  crossed into a new range;
* through `nebula-id serve` (pinned to core 0, wrk on core 1): single IDs and
  batches of 1000 for `/v1/ids/segment/{tag}` against `/v1/ids/snowflake`, and
  the p99 per request around range switches with a sequential client.

    python -m bench.segment [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from tests.support import http, processes
from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresCluster

from nebula_id.clock import SystemClock
from nebula_id.core import pool as pools
from nebula_id.core import poolspec, segment
from nebula_id.core.layout import SnowflakeLayout
from nebula_id.core.snowflake import SnowflakeGenerator
from nebula_id.storage import engines

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")
YIELD_EVERY = 64  # a server yields to the event loop between requests; so do we


def make_pool(step: int, max_step: int) -> pools.PoolConfig:
    return poolspec.parse_spec(
        {"segment": {"tags": [{"name": "bench", "step": step, "maxStep": max_step}]}},
        namespace="bench",
        name=f"step-{step}-{max_step}-{time.time_ns()}",
    )


# --- in process ----------------------------------------------------------------------


async def in_process_rate(dsn: str, *, size: int, seconds: float) -> float:
    pool = make_pool(1000, 1_000_000)
    store = engines.open_store(dsn, pool=pool, datacenter=pool.datacenters[0])
    allocator = segment.SegmentAllocator(
        store, [pools.Tag("bench", 1000, 1_000_000)], clock=SystemClock()
    )
    await allocator.start()
    next_ids = allocator.next_ids
    try:
        made = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for _ in range(YIELD_EVERY):
                made += len(await next_ids("bench", size))
            await asyncio.sleep(0)
        return made / (time.perf_counter() - started)
    finally:
        await allocator.close()
        await store.close()


def snowflake_rate(seconds: float) -> float:
    clock = SystemClock()
    gen = SnowflakeGenerator(SnowflakeLayout(), datacenter=0, worker=1, clock=clock)
    gen.allow_until(clock.wall_ms() + 3_600_000)
    next_id = gen.next_id
    made = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(10_000):
            next_id()
        made += 10_000
    return made / (time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Samples:
    """Latencies (µs) of all calls, of the calls that began a range, and of a control group
    of equal size: the calls half-way through a range."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.every: list[float] = []
        self.at_switch: list[float] = []
        self.mid_range: list[float] = []

    def add(self, value: int, elapsed_us: float) -> None:
        self.every.append(elapsed_us)
        offset = (value - 1) % self.step  # counters start at 1, ranges are contiguous here
        if offset == 0:
            self.at_switch.append(elapsed_us)
        elif offset == self.step // 2:
            self.mid_range.append(elapsed_us)

    def describe(self) -> str:
        def cut(values: list[float]) -> str:
            return (
                f"p50 {percentile(values, 0.5):.1f}, p90 {percentile(values, 0.9):.1f}, "
                f"max {max(values):.0f}"
            )

        return (
            f"{len(self.at_switch)} switches; all calls p50 {percentile(self.every, 0.5):.1f}, "
            f"p99 {percentile(self.every, 0.99):.1f} µs; first call of a range "
            f"{cut(self.at_switch)} µs; mid-range control {cut(self.mid_range)} µs"
        )


async def in_process_switch_latency(dsn: str, *, step: int, calls: int) -> Samples:
    """Per-call latency (µs) of single IDs, for all calls and for calls that began a range."""
    pool = make_pool(step, step)
    store = engines.open_store(dsn, pool=pool, datacenter=pool.datacenters[0])
    allocator = segment.SegmentAllocator(
        store, [pools.Tag("bench", step, step)], clock=SystemClock()
    )
    await allocator.start()
    timer = time.perf_counter_ns
    samples = Samples(step)
    try:
        for i in range(calls):
            started = timer()
            value = (await allocator.next_ids("bench", 1))[0]
            samples.add(value, (timer() - started) / 1000)
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
    finally:
        await allocator.close()
        await store.close()
    return samples


# --- through the sidecar -----------------------------------------------------------------


@contextmanager
def sidecar(dsn: str, tags: str, workdir: pathlib.Path) -> Iterator[str]:
    port = processes.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env |= {"NEBULA_DATABASE_URL": dsn, "NEBULA_TAGS": tags, "NEBULA_LOG_LEVEL": "warning"}
    argv: list[str | os.PathLike[str]] = [
        NEBULA_ID,
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(workdir / f"data-{port}"),
    ]
    if shutil.which("taskset"):
        argv = ["taskset", "-c", "0", *argv]
    proc = processes.spawn(argv, log_path=workdir / f"sidecar-{port}.log", env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while http.get(base + "/readyz", timeout=1.0)[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(processes.log_tail(workdir / f"sidecar-{port}.log"))
            time.sleep(0.05)
        yield base
    finally:
        processes.stop(proc, timeout=5)


def wrk(url: str, *, connections: int, seconds: float) -> tuple[float, float]:
    """(requests/s, p99 ms) from wrk on core 1."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    if shutil.which("taskset"):
        argv = ["taskset", "-c", "1", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rate, float(p99.group(1)) * scale


async def http_switch_latency(base: str, *, step: int, requests: int) -> Samples:
    """Sequential single-ID requests: latency (µs) overall and at range switches."""
    samples = Samples(step)
    async with aiohttp.ClientSession() as session:
        url = f"{base}/v1/ids/segment/switchy"
        for _ in range(requests):
            started = time.perf_counter_ns()
            async with session.get(url) as response:
                value = int((await response.json())["id"])
            samples.add(value, (time.perf_counter_ns() - started) / 1000)
    return samples


ENGINES = ("PostgreSQL", "MariaDB")


async def allocation_rate(dsn: str, *, clients: int, seconds: float) -> tuple[float, float]:
    """(ranges/s, p99 ms) of raw `allocate` calls from `clients` concurrent stores."""
    pool = make_pool(1000, 1000)
    stores = [
        engines.open_store(dsn, pool=pool, datacenter=pool.datacenters[0]) for _ in range(clients)
    ]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def run(store: engines.SegmentDatabase) -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await store.allocate("bench", 1000)
            latencies.append((time.perf_counter() - began) * 1000)

    try:
        await asyncio.gather(*(s.allocate("bench", 1) for s in stores))  # connect first
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(run(s) for s in stores))
        return len(latencies) / (time.perf_counter() - started), percentile(latencies, 0.99)
    finally:
        await asyncio.gather(*(s.close() for s in stores))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.segment", description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="in-process runs (median)")
    # scripts/bench.sh passes BENCH_ARGS to every part; ignore the other parts' flags.
    args, _ = parser.parse_known_args(argv)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="nebula-bench-segment-"))
    lines = [
        "nebula-id segment benchmark: PostgreSQL 15 and MariaDB 10.11 on loopback, medians",
        "(both without fsync, as the test servers run: PostgreSQL fsync=off, MariaDB",
        "innodb_flush_method=nosync; the row marked 'fsync' is MariaDB's durable default)",
        "",
    ]
    try:
        with (
            PostgresCluster() as pg,
            MariaDBServer(extra_args=["--innodb-flush-method=nosync"]) as maria,
            MariaDBServer() as maria_fsync,
        ):
            dsns = {"PostgreSQL": pg.dsn(), "MariaDB": maria.dsn()}
            samples: dict[tuple[str, str], list[float]] = {}

            def sample(engine: str, what: str, value: float) -> None:
                samples.setdefault((engine, what), []).append(value)

            peer = statistics.median(snowflake_rate(0.5) for _ in range(args.repeats))
            # Interleaved repeats: the machine is shared, so the engines run side by side.
            for _ in range(args.repeats):
                for engine, dsn in dsns.items():
                    for size in (1, 1000):
                        rate = asyncio.run(in_process_rate(dsn, size=size, seconds=0.5))
                        sample(engine, f"ids{size}", rate)
                    for clients in (1, 8):
                        ranges, p99 = asyncio.run(
                            allocation_rate(dsn, clients=clients, seconds=0.5)
                        )
                        sample(engine, f"alloc{clients}", ranges)
                        sample(engine, f"alloc{clients}_p99", p99)
                for clients in (1, 8):
                    ranges, p99 = asyncio.run(
                        allocation_rate(maria_fsync.dsn(), clients=clients, seconds=0.5)
                    )
                    sample("MariaDB fsync", f"alloc{clients}", ranges)
                    sample("MariaDB fsync", f"alloc{clients}_p99", p99)

            def med(engine: str, what: str) -> float:
                return statistics.median(samples[(engine, what)])

            def ratio(what: str) -> str:
                return f"{med('MariaDB', what) / med('PostgreSQL', what):5.2f}x"

            lines += [
                "in process (adaptive step from 1000):",
                f"  Snowflake next_id (peer)       {peer / 1e6:7.2f} M IDs/s",
                f"  {'':30} {'PostgreSQL':>12} {'MariaDB':>12}  MariaDB/PG",
            ]
            for what, label, unit, scale in (
                ("ids1", "segment next_ids(tag, 1)", "M IDs/s", 1e6),
                ("ids1000", "segment next_ids(tag, 1000)", "M IDs/s", 1e6),
                ("alloc1", "allocate(), 1 client", "ranges/s", 1),
                ("alloc8", "allocate(), 8 clients", "ranges/s", 1),
            ):
                pg_v, my_v = med("PostgreSQL", what) / scale, med("MariaDB", what) / scale
                digits = 2 if scale > 1 else 0
                lines.append(
                    f"  {label:30} {pg_v:12.{digits}f} {my_v:12.{digits}f}  {ratio(what)}  {unit}"
                )
            for clients in (1, 8):
                key = f"alloc{clients}_p99"
                lines.append(
                    f"  allocate() p99, {clients} client(s)     {med('PostgreSQL', key):9.2f} ms "
                    f"{med('MariaDB', key):9.2f} ms  {ratio(key)}"
                )
                lines.append(
                    f"  MariaDB fsync, {clients} client(s)      "
                    f"{med('MariaDB fsync', f'alloc{clients}'):9.0f} ranges/s, "
                    f"p99 {med('MariaDB fsync', key):.2f} ms"
                )
            for engine, dsn in dsns.items():
                lat = asyncio.run(in_process_switch_latency(dsn, step=1000, calls=200_000))
                lines.append(f"  {engine} latency, fixed step 1000: {lat.describe()}")
            lines += ["", "through the sidecar (sidecar on core 0, wrk -t1 on core 1, medians):"]
            if shutil.which("wrk") is None:
                lines.append("  wrk is not installed (apt-get install -y wrk); no sidecar figures")
                return _print(lines)
            tags = "bench:1000:1000000,switchy:100:100"
            with (
                sidecar(dsns["PostgreSQL"], tags, workdir) as pg_base,
                sidecar(dsns["MariaDB"], tags, workdir) as maria_base,
            ):
                endpoints = (
                    ("snowflake (peer)", pg_base + "/v1/ids/snowflake"),
                    ("segment PostgreSQL", pg_base + "/v1/ids/segment/bench"),
                    ("segment MariaDB", maria_base + "/v1/ids/segment/bench"),
                )
                runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
                for _ in range(args.repeats):
                    for name, url in endpoints:
                        for kind, target, conns in (
                            ("full", url, 32),
                            ("half", url, 2),
                            ("batch", url + "?count=1000", 8),
                        ):
                            result = wrk(target, connections=conns, seconds=args.seconds)
                            runs.setdefault((name, kind), []).append(result)

                def wrk_med(name: str, kind: str) -> tuple[float, float]:
                    values = runs[(name, kind)]
                    return (
                        statistics.median(v[0] for v in values),
                        statistics.median(v[1] for v in values),
                    )

                for name, _ in endpoints:
                    (rate, p99), (half, half_p99) = wrk_med(name, "full"), wrk_med(name, "half")
                    batch_rate, batch_p99 = wrk_med(name, "batch")
                    lines.append(
                        f"  {name:18} single: {rate:8.0f} req/s (p99 {p99:.2f} ms at -c32; "
                        f"{half:.0f} req/s, p99 {half_p99:.2f} ms at -c2)"
                    )
                    lines.append(
                        f"  {name:18} count=1000: {batch_rate * 1000 / 1e6:.2f} M IDs/s "
                        f"({batch_rate:.0f} req/s, p99 {batch_p99:.2f} ms)"
                    )
                pg_rate = wrk_med("segment PostgreSQL", "full")[0]
                my_rate = wrk_med("segment MariaDB", "full")[0]
                lines.append(f"  segment single, MariaDB/PostgreSQL: {my_rate / pg_rate:.2f}x")
                for engine, base in (("PostgreSQL", pg_base), ("MariaDB", maria_base)):
                    switch = asyncio.run(http_switch_latency(base, step=100, requests=10_000))
                    lines.append(f"  {engine}, sequential client, step 100: {switch.describe()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _print(lines)


def _print(lines: list[str]) -> int:
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
