"""The sidecar over loopback, with plain aiohttp "hello" as the peer in the same run.

Starts `nebula-id serve` (standalone, throwaway data dir) and a minimal aiohttp
app, each pinned to core 0, and drives them with `wrk` pinned to core 1:

* single Snowflake IDs per request (req/s, against "hello"), UUIDv7 too;
* p99 latency at about half of the measured single-ID load (wrk paced by a
  1 ms delay per connection, since wrk2 is not available);
* batches of 1000 (IDs/s);
* start to ready (process start until `/readyz` answers 200) and RSS at rest,
  standalone and in cluster mode against a real etcd (the test suite's binary).

    python -m bench.http [--seconds 3] [--repeats 3] [--json] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence

TARGET_RPS = 15_000
TARGET_P99_MS = 2.0
TARGET_BATCH_IDS = 2_000_000
TARGET_RSS_MB = 64
TARGET_READY_S = 1.0

HELLO_APP = """
import sys
from aiohttp import web
async def hello(request):
    return web.Response(text="hello")
app = web.Application()
app.router.add_get("/", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

PACED_SCRIPT = "function delay()\n  return 1\nend\n"

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: int) -> list[str]:
    """`taskset -c core` when there are two cores to separate server and load."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core)]
    return []


def status_of(url: str) -> int:
    try:
        with _NO_PROXY.open(url, timeout=1.0) as response:
            return int(response.status)
    except Exception:
        return 0


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before {url} answered")
        if status_of(url) == 200:
            return time.monotonic() - started
        time.sleep(0.005)
    raise SystemExit(f"{url} not ready after {timeout}s")


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    script: pathlib.Path | None = None,
    server_pid: int | None = None,
) -> dict[str, float]:
    """Run wrk on core 1: requests/s, p50/p99 latency (ms), non-2xx count.

    With `server_pid`, also the server's CPU time per request, which other load
    on the machine barely changes: ``1e6 / cpu_us`` is what one whole core
    would serve.
    """
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    argv = [
        *pinned(1),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
    ]
    if script is not None:
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])}  # type: ignore[index]
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        result[f"p{pct}_ms"] = float(match[1]) * _UNITS[match[2]] if match else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non_2xx"] = float(bad[1]) if bad else 0.0
    if server_pid:
        done = re.search(r"(\d+) requests in", out)
        requests = float(done[1]) if done else 0.0
        used = cpu_seconds(server_pid) - cpu_before
        result["cpu_us"] = used / requests * 1e6 if requests else float("nan")
    return result


def median_of(runs: Sequence[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def start(argv: list[str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


POOL_YAML = """
apiVersion: nebula-id.io/v1alpha1
kind: NebulaIdPool
metadata: {name: bench, namespace: bench}
spec:
  algorithm: snowflake
  lease: {ttlSeconds: 10}
"""


def measure_cluster(repeats: int, workdir: pathlib.Path) -> dict[str, float]:
    """Start to ready with etcd up: a real etcd (the test suite's), one pool, fresh sidecars."""
    from tests.support.binaries import bin_dir
    from tests.support.etcd import EtcdServer

    nebula_id = pathlib.Path(sys.executable).with_name("nebula-id")
    etcd = EtcdServer(bin_dir(), workdir / "etcd").start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
        env |= {"NEBULA_ETCD_ENDPOINTS": etcd.endpoint, "NEBULA_POOL": "bench/bench"}
        pool_file = workdir / "pool.yaml"
        pool_file.write_text(POOL_YAML)
        subprocess.run(
            [str(nebula_id), "pool", "apply", "-f", str(pool_file)],
            env=env,
            check=True,
            capture_output=True,
        )
        times, rss = [], []
        for i in range(repeats):
            port = free_port()
            argv = [str(nebula_id), "serve", "--port", str(port), "--log-level", "warning"]
            argv += ["--data-dir", str(workdir / f"cluster-{i}")]
            with (workdir / f"cluster-{i}.log").open("ab") as log:
                proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                times.append(wait_for(f"http://127.0.0.1:{port}/readyz", proc))
                time.sleep(1.0)
                rss.append(rss_mb(proc.pid))
            finally:
                stop(proc)  # graceful: the lease is revoked, the next start claims at once
    finally:
        etcd.stop()
    return {
        "cluster_start_to_ready_s": statistics.median(times),
        "cluster_rss_at_rest_mb": statistics.median(rss),
    }


def measure(seconds: float, repeats: int, workdir: pathlib.Path) -> dict[str, float]:
    nebula_id = pathlib.Path(sys.executable).with_name("nebula-id")
    port, hello_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    hello_url = f"http://127.0.0.1:{hello_port}/"
    env_argv = ["--port", str(port), "--data-dir", str(workdir / "data"), "--log-level", "warning"]
    hello_file = workdir / "hello.py"
    hello_file.write_text(HELLO_APP)
    figures: dict[str, float] = {}
    sidecar = start([*pinned(0), str(nebula_id), "serve", *env_argv], workdir / "sidecar.log")
    try:
        figures["start_to_ready_s"] = wait_for(base + "/readyz", sidecar)
    except BaseException:
        stop(sidecar)
        raise
    # The peer starts only now, so it does not compete with the sidecar's start.
    hello = start([*pinned(0), sys.executable, str(hello_file), str(hello_port)], workdir / "h.log")
    try:
        wait_for(hello_url, hello)
        time.sleep(1.0)
        figures["rss_at_rest_mb"] = rss_mb(sidecar.pid)
        # Warm both up, then alternate so both see the same background load.
        wrk(base + "/v1/ids", seconds=1, connections=32)
        wrk(hello_url, seconds=1, connections=32)
        singles, hellos = [], []
        for _ in range(repeats):
            singles.append(
                wrk(base + "/v1/ids", seconds=seconds, connections=32, server_pid=sidecar.pid)
            )
            hellos.append(wrk(hello_url, seconds=seconds, connections=32, server_pid=hello.pid))
        figures["single_rps"] = median_of(singles, "rps")
        figures["single_p99_ms_full_load"] = median_of(singles, "p99_ms")
        figures["hello_rps"] = median_of(hellos, "rps")
        figures["single_vs_hello"] = figures["single_rps"] / figures["hello_rps"]
        figures["single_cpu_us"] = median_of(singles, "cpu_us")
        figures["hello_cpu_us"] = median_of(hellos, "cpu_us")
        figures["single_rps_per_core_by_cpu"] = 1e6 / figures["single_cpu_us"]
        figures["hello_rps_per_core_by_cpu"] = 1e6 / figures["hello_cpu_us"]
        figures["single_non_2xx"] = sum(r["non_2xx"] for r in singles)
        uuid7 = [
            wrk(base + "/v1/ids/uuid7", seconds=seconds, connections=32) for _ in range(repeats)
        ]
        figures["uuid7_rps"] = median_of(uuid7, "rps")
        batches = [
            wrk(base + "/v1/ids?count=1000", seconds=seconds, connections=8) for _ in range(repeats)
        ]
        figures["batch1000_ids_per_s"] = median_of(batches, "rps") * 1000
        # Half load: each connection waits 1 ms (wrk's timer; in practice
        # 1-3 ms) after every answer.  Calibrate the number of connections with
        # short runs until the rate lands near half the measured maximum.
        script = workdir / "paced.lua"
        script.write_text(PACED_SCRIPT)
        half = figures["single_rps"] / 2
        connections = max(1, round(half / 500))
        for _ in range(4):
            achieved = wrk(base + "/v1/ids", seconds=1, connections=connections, script=script)
            if abs(achieved["rps"] - half) <= 0.1 * half:
                break
            connections = max(1, round(connections * half / max(achieved["rps"], 1.0)))
        paced = [
            wrk(base + "/v1/ids", seconds=seconds, connections=connections, script=script)
            for _ in range(repeats)
        ]
        figures["half_load_rps"] = median_of(paced, "rps")
        figures["half_load_p50_ms"] = median_of(paced, "p50_ms")
        figures["half_load_p99_ms"] = median_of(paced, "p99_ms")
        figures["rss_after_load_mb"] = rss_mb(sidecar.pid)
    finally:
        stop(sidecar)
        stop(hello)
    return figures


def report(figures: dict[str, float]) -> list[str]:
    """Print the table; return the targets missed."""
    rows = [
        (
            "single IDs, req/s",
            figures["single_rps"],
            f">= {TARGET_RPS:,}",
            figures["single_rps"] >= TARGET_RPS,
        ),
        ('plain aiohttp "hello", req/s (peer)', figures["hello_rps"], "", True),
        ("single / hello", figures["single_vs_hello"], "", True),
        ("single IDs, server CPU us per request", figures["single_cpu_us"], "", True),
        ('"hello", server CPU us per request', figures["hello_cpu_us"], "", True),
        (
            "single IDs, req/s per whole core (1e6 / CPU us)",
            figures["single_rps_per_core_by_cpu"],
            f">= {TARGET_RPS:,}",
            figures["single_rps_per_core_by_cpu"] >= TARGET_RPS,
        ),
        (
            '"hello", req/s per whole core (1e6 / CPU us)',
            figures["hello_rps_per_core_by_cpu"],
            "",
            True,
        ),
        ("UUIDv7 single, req/s", figures["uuid7_rps"], "", True),
        (
            f"p99 at half load ({figures['half_load_rps']:,.0f} req/s), ms",
            figures["half_load_p99_ms"],
            f"<= {TARGET_P99_MS}",
            figures["half_load_p99_ms"] <= TARGET_P99_MS,
        ),
        ("p50 at half load, ms", figures["half_load_p50_ms"], "", True),
        (
            "batches of 1000, IDs/s",
            figures["batch1000_ids_per_s"],
            f">= {TARGET_BATCH_IDS:,}",
            figures["batch1000_ids_per_s"] >= TARGET_BATCH_IDS,
        ),
        (
            "RSS at rest, MB",
            figures["rss_at_rest_mb"],
            f"<= {TARGET_RSS_MB}",
            figures["rss_at_rest_mb"] <= TARGET_RSS_MB,
        ),
        ("RSS after load, MB", figures["rss_after_load_mb"], "", True),
        (
            "start to ready (standalone), s",
            figures["start_to_ready_s"],
            f"<= {TARGET_READY_S}",
            figures["start_to_ready_s"] <= TARGET_READY_S,
        ),
    ]
    if "cluster_start_to_ready_s" in figures:
        rows += [
            (
                "start to ready (cluster, etcd up), s",
                figures["cluster_start_to_ready_s"],
                f"<= {TARGET_READY_S}",
                figures["cluster_start_to_ready_s"] <= TARGET_READY_S,
            ),
            (
                "RSS at rest (cluster), MB",
                figures["cluster_rss_at_rest_mb"],
                f"<= {TARGET_RSS_MB}",
                figures["cluster_rss_at_rest_mb"] <= TARGET_RSS_MB,
            ),
        ]
    missed = []
    print(f"{'sidecar over loopback (server core 0, wrk core 1)':48} {'figure':>14}  target")
    for name, value, target, ok in rows:
        shown = f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
        mark = "" if not target else ("  ok" if ok else "  MISSED")
        print(f"{name:48} {shown:>14}  {target}{mark}")
        if not ok:
            missed.append(name)
    if figures["single_non_2xx"]:
        print(f"warning: {figures['single_non_2xx']:.0f} non-2xx answers during the single-ID runs")
    load = os.getloadavg()[0]
    print(
        f"(load average {load:.1f} on {os.cpu_count()} cores: "
        "other work on the machine skews these figures)"
    )
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--no-etcd", action="store_true", help="skip the cluster-mode figures")
    args, _ = parser.parse_known_args(argv)
    if shutil.which("wrk") is None:
        print("bench.http: wrk is missing (apt-get install -y wrk)", file=sys.stderr)
        return 1
    # Short parts' defaults (e.g. --seconds 0.2 for bench.core) are too short for wrk.
    seconds = max(1.0, args.seconds)
    with tempfile.TemporaryDirectory(prefix="nebula-bench-http-") as tmp:
        figures = measure(seconds, max(1, args.repeats), pathlib.Path(tmp))
        if not args.no_etcd:
            figures |= measure_cluster(max(1, args.repeats), pathlib.Path(tmp))
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    missed = report(figures)
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
