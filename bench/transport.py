"""HTTP over TCP, HTTP over the Unix socket, and gRPC, against one sidecar in the same run.

One `nebula-id serve --unix-socket PATH --grpc-port N` pinned to core 0; the
load comes from this process on core 1: a bounded asyncio client (uvloop when
installed) with `--connections` workers, each on its own connection, sending
one request after another.  The HTTP workers use the clients' own HTTP/1.1
connection (`nebula_id.client.wire`), the gRPC ones a grpc.aio channel each.
The kinds run round-robin, `--repeats` rounds, medians reported.

The Python load generator is slower than the server, so req/s mostly measures
the client; the server's CPU time per request (from /proc) does not, and is
the figure to compare.

    python -m bench.transport [--seconds 3] [--repeats 3] [--connections 16] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bench.http import cpu_seconds, free_port, pinned, start, stop, wait_for
from nebula_id.client import wire

NEBULA_ID = pathlib.Path(sys.executable).with_name("nebula-id")
# The gRPC floor: a bare grpc.aio server whose only method (the standard
# health Check) answers a constant, on the same event loop choice as the sidecar.
GRPC_FLOOR = """
import asyncio, sys
import grpc
from grpc_health.v1 import health, health_pb2_grpc
async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""
TARGET_GRPC_VS_HTTP = 0.8
Call = Callable[[], Awaitable[int]]


async def load(calls: list[Call], seconds: float, pid: int) -> dict[str, float]:
    """Each worker repeats its call until the deadline; requests/s, IDs/s, server CPU us/request.

    A refused call (say, a 503 while a starved sidecar's high-water mark lags
    the clock) counts as a request and in `errors`, not as IDs.
    """
    deadline = time.monotonic() + seconds
    counts = [0, 0, 0]

    async def worker(call: Call) -> None:
        while time.monotonic() < deadline:
            try:
                got = await call()
            except Exception:
                got = 0
                counts[2] += 1
            counts[0] += 1
            counts[1] += got

    cpu_before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*(worker(c) for c in calls))
    elapsed = time.monotonic() - started
    used = cpu_seconds(pid) - cpu_before
    return {
        "rps": counts[0] / elapsed,
        "ids_per_s": counts[1] / elapsed,
        "cpu_us": used / counts[0] * 1e6 if counts[0] else float("nan"),
        "cpu_ns_per_id": used / counts[1] * 1e9 if counts[1] else float("nan"),
        "errors": float(counts[2]),
    }


def http_calls(target: wire.Target, path: str, n: int, accept: str) -> list[Call]:
    request = wire.request_bytes(target, path, {"Accept": accept})

    def make() -> Call:
        connection = wire.AsyncConnection(target)

        async def call() -> int:
            (answer,) = await connection.get(request)
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}: {answer.body[:200]!r}")
            return len(answer.body) // 8 if accept == "application/octet-stream" else 1

        return call

    return [make() for _ in range(n)]


def grpc_calls(port: int, n: int, kind: str) -> tuple[list[Call], list[object]]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from nebula_id.rpc import ids_pb2, ids_pb2_grpc

    def health_call(stub: Any, request: Any) -> Call:
        async def call() -> int:
            await stub.Check(request)
            return 1

        return call

    def unary_call(stub: Any, request: Any) -> Call:
        async def call() -> int:
            await stub.Next(request)
            return 1

        return call

    def batch_call(stub: Any, request: Any) -> Call:
        async def call() -> int:
            reply = await stub.Batch(request)
            return len(reply.ids)

        return call

    def stream_call(stub: Any, request: Any) -> Call:
        async def call() -> int:
            got = 0
            async for reply in stub.Stream(request):
                got += len(reply.ids)
            return got

        return call

    channels: list[object] = []
    calls: list[Call] = []
    for _ in range(n):
        # One channel (one HTTP/2 connection) per worker, as the HTTP workers have.
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        stub = ids_pb2_grpc.IdsStub(channel)  # type: ignore[no-untyped-call]
        channels.append(channel)
        if kind == "health":
            call = health_call(health_pb2_grpc.HealthStub(channel), health_pb2.HealthCheckRequest())
        elif kind == "unary":
            call = unary_call(stub, ids_pb2.NextRequest())
        elif kind == "stream":
            # A bulk loader's call: 100 messages of 1000 IDs on one stream.
            call = stream_call(stub, ids_pb2.StreamRequest(batch_size=1000, total=100_000))
        else:
            call = batch_call(stub, ids_pb2.BatchRequest(count=1000))
        calls.append(call)
    return calls, channels


async def measure_with(
    port: int,
    grpc_port: int,
    socket_path: str,
    pid: int,
    floor: tuple[int, int],
    args: argparse.Namespace,
) -> dict[str, float]:
    tcp = wire.Target.of(f"http://127.0.0.1:{port}", None)
    unix = wire.Target.of("http://localhost", socket_path)
    n = args.connections
    text, binary = "text/plain", "application/octet-stream"
    unary, unary_channels = grpc_calls(grpc_port, n, "unary")
    batches, batch_channels = grpc_calls(grpc_port, max(1, n // 4), "batch")
    streams, stream_channels = grpc_calls(grpc_port, max(1, n // 4), "stream")
    floor_calls, floor_channels = grpc_calls(floor[0], n, "health")
    pids = {"grpc_floor": floor[1]}
    kinds: dict[str, list[Call]] = {
        "grpc_floor": floor_calls,
        "http_tcp": http_calls(tcp, "/v1/ids", n, text),
        "http_unix": http_calls(unix, "/v1/ids", n, text),
        "grpc_unary": unary,
        "http_tcp_batch1000": http_calls(tcp, "/v1/ids?count=1000", max(1, n // 4), binary),
        "http_unix_batch1000": http_calls(unix, "/v1/ids?count=1000", max(1, n // 4), binary),
        "grpc_batch1000": batches,
        "grpc_stream": streams,
    }
    try:
        for name, calls in kinds.items():
            await load(calls, 0.5, pids.get(name, pid))  # connect and warm up
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in kinds}
        for _ in range(args.repeats):
            for name, calls in kinds.items():
                runs[name].append(await load(calls, args.seconds, pids.get(name, pid)))
    finally:
        for channel in unary_channels + batch_channels + stream_channels + floor_channels:
            await channel.close()  # type: ignore[attr-defined]
    figures: dict[str, float] = {}
    for name, found in runs.items():
        for key in ("rps", "ids_per_s", "cpu_us", "cpu_ns_per_id"):
            figures[f"{name}_{key}"] = statistics.median(r[key] for r in found)
        figures[f"{name}_errors"] = sum(r["errors"] for r in found)
    figures["grpc_vs_http_rps"] = figures["grpc_unary_rps"] / figures["http_tcp_rps"]
    figures["grpc_vs_http_by_cpu"] = figures["http_tcp_cpu_us"] / figures["grpc_unary_cpu_us"]
    figures["grpc_vs_grpc_floor_by_cpu"] = (
        figures["grpc_floor_cpu_us"] / figures["grpc_unary_cpu_us"]
    )
    figures["unix_vs_tcp_rps"] = figures["http_unix_rps"] / figures["http_tcp_rps"]
    figures["unix_vs_tcp_by_cpu"] = figures["http_tcp_cpu_us"] / figures["http_unix_cpu_us"]
    return figures


def measure(args: argparse.Namespace, workdir: pathlib.Path) -> dict[str, float]:
    port, grpc_port = free_port(), free_port()
    socket_path = str(workdir / "s.sock")
    argv = [*pinned(0), str(NEBULA_ID), "serve", "--port", str(port), "--log-level", "warning"]
    argv += ["--data-dir", str(workdir / "data"), "--unix-socket", socket_path]
    argv += ["--grpc-port", str(grpc_port)]
    sidecar = start(argv, workdir / "sidecar.log")
    floor_port = free_port()
    floor_file = workdir / "grpc_floor.py"
    floor_file.write_text(GRPC_FLOOR)
    floor = start([*pinned(0), sys.executable, str(floor_file), str(floor_port)], workdir / "f.log")
    try:
        wait_for(f"http://127.0.0.1:{port}/readyz", sidecar)
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(0, {1})
        runner = _runner()
        return runner(
            measure_with(port, grpc_port, socket_path, sidecar.pid, (floor_port, floor.pid), args)
        )
    finally:
        stop(sidecar)
        stop(floor)


def _runner() -> Callable[[Coroutine[Any, Any, dict[str, float]]], dict[str, float]]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run

    def run(main: Coroutine[Any, Any, dict[str, float]]) -> dict[str, float]:
        return uvloop.run(main)

    return run


ROWS = [
    ("http_tcp", "HTTP single ID over TCP"),
    ("http_unix", "HTTP single ID over the Unix socket"),
    ("grpc_unary", "gRPC unary Next (TCP)"),
    ("grpc_floor", "peer: bare grpc.aio server, health Check"),
    ("http_tcp_batch1000", "HTTP batch of 1000 (binary) over TCP"),
    ("http_unix_batch1000", "HTTP batch of 1000 (binary) over the socket"),
    ("grpc_batch1000", "gRPC Batch of 1000"),
    ("grpc_stream", "gRPC Stream, 100 x 1000 per call"),
]


def report(figures: dict[str, float], args: argparse.Namespace) -> list[str]:
    title = "one sidecar (core 0), load from core 1"
    print(f"{title:46} {'req/s':>9} {'IDs/s':>11} {'CPU us/req':>11} {'CPU ns/ID':>10}")
    for key, name in ROWS:
        print(
            f"{name:46} {figures[f'{key}_rps']:>9,.0f} {figures[f'{key}_ids_per_s']:>11,.0f} "
            f"{figures[f'{key}_cpu_us']:>11.1f} {figures[f'{key}_cpu_ns_per_id']:>10,.0f}"
        )
    refused = {key: figures[f"{key}_errors"] for key, _ in ROWS if figures[f"{key}_errors"]}
    if refused:
        print(f"warning: refused calls (counted as requests, not IDs): {refused}")
    by_cpu = figures["grpc_vs_http_by_cpu"]
    ok = by_cpu >= TARGET_GRPC_VS_HTTP
    print(
        f"gRPC unary / HTTP single: {figures['grpc_vs_http_rps']:.2f}x by req/s, "
        f"{by_cpu:.2f}x by server CPU per request (target >= {TARGET_GRPC_VS_HTTP}: "
        f"{'ok' if ok else 'MISSED'})"
    )
    print(
        f"gRPC unary / bare grpc.aio floor, by server CPU per request: "
        f"{figures['grpc_vs_grpc_floor_by_cpu']:.2f}x"
    )
    print(
        f"Unix socket / TCP: {figures['unix_vs_tcp_rps']:.2f}x by req/s, "
        f"{figures['unix_vs_tcp_by_cpu']:.2f}x by server CPU per request"
    )
    print(
        f"({args.connections} workers, median of {args.repeats} interleaved runs of "
        f"{args.seconds:g} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    return [] if ok else ["gRPC unary vs HTTP"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true")
    args, _ = parser.parse_known_args(argv)
    args.seconds = max(1.0, args.seconds)
    with tempfile.TemporaryDirectory(prefix="nebula-bench-transport-") as tmp:
        figures = measure(args, pathlib.Path(tmp))
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    missed = report(figures, args)
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
