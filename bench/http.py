"""The sidecar over loopback, against plain aiohttp "hello" apps in the same run.

Starts `nebula-id serve` (standalone, throwaway data dirs) and minimal aiohttp
apps returning a constant, each pinned to core 0, and drives them with `wrk`
(``-t1 -c16``, ``Accept: text/plain``) pinned to core 1, round-robin so that
every figure and its peer see the same background load (median of the rounds):

* single IDs per request, Snowflake and Segment, on uvloop (what the sidecar
  uses when `nebula-id[fast]` is installed) against the uvloop "hello", and on
  asyncio's own loop against the asyncio "hello";
* the same Snowflake path with an API key and a rate limit switched on (a
  second sidecar, limit far above the load), against the same floor;
* the server's CPU time per request next to each req/s: other load on the
  machine steals wall time, hardly CPU time, so ``1e6 / cpu_us`` is what one
  whole core would serve;
* p99 latency at about half of the measured single-ID load (wrk paced by a
  1 ms delay per connection, since wrk2 is not available), with the time the
  server spent waiting for a CPU (``/proc/PID/schedstat``) during those runs:
  on a shared machine that wait, not our code, is what sets the tail;
* batches of 1000 (IDs/s), JSON and binary;
* start to ready and RSS at rest, standalone and in cluster mode against a
  real etcd (the test suite's binary).

    python -m bench.http [--seconds 3] [--repeats 3] [--json] [--check] [--no-etcd]
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

from tests.support.processes import free_port as free_port

TARGET_RPS = 15_000
TARGET_VS_FLOOR = 0.9
TARGET_P99_MS = 1.0
TARGET_BATCH_IDS = 2_000_000
TARGET_RSS_MB = 64
TARGET_READY_S = 1.0

HELLO_APP = """
import asyncio, sys
from aiohttp import web
async def hello(request):
    return web.Response(text="hello")
app = web.Application()
app.router.add_get("/", hello)
loop = None
if sys.argv[2] == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=loop)
"""

# The sidecar without uvloop: the same command with the import made to fail.
NO_UVLOOP = (
    "import sys; sys.modules['uvloop'] = None; "
    "from nebula_id.cli import main; sys.exit(main(sys.argv[1:]))"
)
TEXT = ["-H", "Accept: text/plain"]

PACED_SCRIPT = "function delay()\n  return 1\nend\n"

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


def run_delay_s(pid: int) -> float:
    """Seconds the process has waited on a run queue for a CPU so far (schedstat)."""
    try:
        return int(pathlib.Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    script: pathlib.Path | None = None,
    server_pid: int | None = None,
    headers: Sequence[str] = (),
) -> dict[str, float]:
    """Run wrk on core 1: requests/s, p50/p99 latency (ms), non-2xx count.

    With `server_pid`, also the server's CPU time per request, which other load
    on the machine barely changes: ``1e6 / cpu_us`` is what one whole core
    would serve.
    """
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    waited_before = run_delay_s(server_pid) if server_pid else 0.0
    started = time.monotonic()
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
    argv += list(headers)
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
        elapsed = time.monotonic() - started
        result["run_queue_share"] = (run_delay_s(server_pid) - waited_before) / elapsed
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
    hello_file = workdir / "hello.py"
    hello_file.write_text(HELLO_APP)
    figures: dict[str, float] = {}
    procs: list[subprocess.Popen[bytes]] = []

    def sidecar(name: str, *flags: str, uvloop: bool = True) -> tuple[str, int]:
        port = free_port()
        argv = ["serve", "--port", str(port), "--data-dir", str(workdir / name)]
        argv += ["--log-level", "warning", "--tags", "bench:100000:1000000", *flags]
        command = [str(nebula_id)] if uvloop else [sys.executable, "-c", NO_UVLOOP]
        proc = start([*pinned(0), *command, *argv], workdir / f"{name}.log")
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        ready = wait_for(base + "/readyz", proc)
        if name == "uvloop":
            figures["start_to_ready_s"] = ready
        return base, proc.pid

    def hello(loop: str) -> tuple[str, int]:
        port = free_port()
        argv = [*pinned(0), sys.executable, str(hello_file), str(port), loop]
        proc = start(argv, workdir / f"hello-{loop}.log")
        procs.append(proc)
        wait_for(f"http://127.0.0.1:{port}/", proc)
        return f"http://127.0.0.1:{port}/", proc.pid

    try:
        fast, fast_pid = sidecar("uvloop")
        slow, slow_pid = sidecar("asyncio", uvloop=False)
        keys_file = workdir / "api-keys"  # keys have no command-line flag
        keys_file.write_text("bench-key\n")
        guarded, guarded_pid = sidecar(
            "guarded", "--auth-api-keys-file", str(keys_file), "--rate-limit-rps", "1000000000"
        )
        floor_uv, floor_uv_pid = hello("uvloop")
        floor, floor_pid = hello("asyncio")
        time.sleep(1.0)
        figures["rss_at_rest_mb"] = rss_mb(fast_pid)
        key = ["-H", "X-API-Key: bench-key"]
        targets: dict[str, tuple[str, int, list[str]]] = {
            "floor_uvloop": (floor_uv, floor_uv_pid, TEXT),
            "snowflake_uvloop": (fast + "/v1/ids", fast_pid, TEXT),
            "segment_uvloop": (fast + "/v1/ids/segment/bench", fast_pid, TEXT),
            "guarded_snowflake_uvloop": (guarded + "/v1/ids", guarded_pid, TEXT + key),
            "floor_asyncio": (floor, floor_pid, TEXT),
            "snowflake_asyncio": (slow + "/v1/ids", slow_pid, TEXT),
            "segment_asyncio": (slow + "/v1/ids/segment/bench", slow_pid, TEXT),
        }
        for url, _, headers in targets.values():  # warm up
            wrk(url, seconds=1, connections=16, headers=headers)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for _ in range(repeats):
            for name, (url, pid, headers) in targets.items():
                runs[name].append(
                    wrk(url, seconds=seconds, connections=16, server_pid=pid, headers=headers)
                )
        for name, found in runs.items():
            figures[f"{name}_rps"] = median_of(found, "rps")
            figures[f"{name}_cpu_us"] = median_of(found, "cpu_us")
            figures[f"{name}_p99_ms_full_load"] = median_of(found, "p99_ms")
            figures[f"{name}_non_2xx"] = sum(r["non_2xx"] for r in found)
        for name in targets:
            loop = name.rpartition("_")[2]
            floor_name = f"floor_{loop}"
            if name != floor_name:
                figures[f"{name}_vs_floor"] = figures[f"{name}_rps"] / figures[f"{floor_name}_rps"]
                figures[f"{name}_vs_floor_by_cpu"] = (
                    figures[f"{floor_name}_cpu_us"] / figures[f"{name}_cpu_us"]
                )
        figures["uuid7_rps"] = median_of(
            [
                wrk(fast + "/v1/ids/uuid7", seconds=seconds, connections=16, headers=TEXT)
                for _ in range(repeats)
            ],
            "rps",
        )
        batch_json, batch_binary = [], []
        binary = ["-H", "Accept: application/octet-stream"]
        for _ in range(repeats):
            batch_json.append(wrk(fast + "/v1/ids?count=1000", seconds=seconds, connections=8))
            batch_binary.append(
                wrk(fast + "/v1/ids?count=1000", seconds=seconds, connections=8, headers=binary)
            )
        figures["batch1000_ids_per_s"] = median_of(batch_json, "rps") * 1000
        figures["batch1000_binary_ids_per_s"] = median_of(batch_binary, "rps") * 1000
        figures |= half_load(
            fast + "/v1/ids", fast_pid, "snowflake", figures, seconds, repeats, workdir
        )
        figures |= half_load(floor_uv, floor_uv_pid, "floor", figures, seconds, repeats, workdir)
        figures["rss_after_load_mb"] = rss_mb(fast_pid)
    finally:
        for proc in procs:
            stop(proc)
    return figures


def half_load(
    url: str,
    pid: int,
    name: str,
    figures: dict[str, float],
    seconds: float,
    repeats: int,
    workdir: pathlib.Path,
) -> dict[str, float]:
    """p50/p99 at about half of `name`'s saturated rate, and the server's run-queue wait.

    Each connection waits 1 ms (wrk's timer; in practice 1-3 ms) after every
    answer; short runs calibrate the number of connections until the rate
    lands near half the measured maximum.
    """
    script = workdir / "paced.lua"
    script.write_text(PACED_SCRIPT)
    saturated = figures[f"{name}_uvloop_rps"]
    half = saturated / 2
    connections = max(1, round(half / 500))
    for _ in range(4):
        achieved = wrk(url, seconds=1, connections=connections, script=script, headers=TEXT)
        if abs(achieved["rps"] - half) <= 0.1 * half:
            break
        connections = max(1, round(connections * half / max(achieved["rps"], 1.0)))
    paced = [
        wrk(
            url,
            seconds=seconds,
            connections=connections,
            script=script,
            server_pid=pid,
            headers=TEXT,
        )
        for _ in range(repeats)
    ]
    return {
        f"{name}_half_load_rps": median_of(paced, "rps"),
        f"{name}_half_load_p50_ms": median_of(paced, "p50_ms"),
        f"{name}_half_load_p99_ms": median_of(paced, "p99_ms"),
        f"{name}_half_load_run_queue_share": median_of(paced, "run_queue_share"),
    }


def report(figures: dict[str, float]) -> list[str]:
    """Print the table; return the targets missed."""
    f = figures
    rows: list[tuple[str, float, str, bool]] = []

    def vs_floor(name: str, label: str, targeted: bool) -> None:
        ratio, by_cpu = f[f"{name}_vs_floor"], f[f"{name}_vs_floor_by_cpu"]
        rows.append((f"{label}, req/s", f[f"{name}_rps"], "", True))
        rows.append(("  server CPU us per request", f[f"{name}_cpu_us"], "", True))
        target = f">= {TARGET_VS_FLOOR}" if targeted else ""
        rows.append(("  / floor, req/s", ratio, target, not targeted or ratio >= TARGET_VS_FLOOR))
        rows.append(
            (
                "  / floor, by CPU per request",
                by_cpu,
                target,
                not targeted or by_cpu >= TARGET_VS_FLOOR,
            )
        )

    for loop in ("uvloop", "asyncio"):
        rows.append((f'floor: aiohttp "hello" on {loop}, req/s', f[f"floor_{loop}_rps"], "", True))
        rows.append(("  server CPU us per request", f[f"floor_{loop}_cpu_us"], "", True))
        vs_floor(f"snowflake_{loop}", f"Snowflake single IDs on {loop}", loop == "uvloop")
        vs_floor(f"segment_{loop}", f"Segment single IDs on {loop}", loop == "uvloop")
        if loop == "uvloop":
            vs_floor("guarded_snowflake_uvloop", "Snowflake with API key + rate limit", False)
    p99 = f["snowflake_half_load_p99_ms"]
    rows += [
        ("UUIDv7 single, req/s", f["uuid7_rps"], "", True),
        (
            f"Snowflake p99 at half load ({f['snowflake_half_load_rps']:,.0f} req/s), ms",
            p99,
            f"<= {TARGET_P99_MS}",
            p99 <= TARGET_P99_MS,
        ),
        ("  p50, ms", f["snowflake_half_load_p50_ms"], "", True),
        (
            "  share of the run the server waited for a CPU",
            f["snowflake_half_load_run_queue_share"],
            "",
            True,
        ),
        (
            f"floor p99 at half load ({f['floor_half_load_rps']:,.0f} req/s), ms",
            f["floor_half_load_p99_ms"],
            "",
            True,
        ),
        (
            "  share of the run the floor waited for a CPU",
            f["floor_half_load_run_queue_share"],
            "",
            True,
        ),
        (
            "batches of 1000 (JSON), IDs/s",
            f["batch1000_ids_per_s"],
            f">= {TARGET_BATCH_IDS:,}",
            f["batch1000_ids_per_s"] >= TARGET_BATCH_IDS,
        ),
        ("batches of 1000 (binary int64), IDs/s", f["batch1000_binary_ids_per_s"], "", True),
        (
            "RSS at rest, MB",
            f["rss_at_rest_mb"],
            f"<= {TARGET_RSS_MB}",
            f["rss_at_rest_mb"] <= TARGET_RSS_MB,
        ),
        ("RSS after load, MB", f["rss_after_load_mb"], "", True),
        (
            "start to ready (standalone), s",
            f["start_to_ready_s"],
            f"<= {TARGET_READY_S}",
            f["start_to_ready_s"] <= TARGET_READY_S,
        ),
    ]
    if "cluster_start_to_ready_s" in f:
        rows += [
            (
                "start to ready (cluster, etcd up), s",
                f["cluster_start_to_ready_s"],
                f"<= {TARGET_READY_S}",
                f["cluster_start_to_ready_s"] <= TARGET_READY_S,
            ),
            (
                "RSS at rest (cluster), MB",
                f["cluster_rss_at_rest_mb"],
                f"<= {TARGET_RSS_MB}",
                f["cluster_rss_at_rest_mb"] <= TARGET_RSS_MB,
            ),
        ]
    missed = []
    print(f"{'sidecar over loopback (server core 0, wrk core 1)':56} {'figure':>12}  target")
    for name, value, target, ok in rows:
        shown = f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
        mark = "" if not target else ("  ok" if ok else "  MISSED")
        print(f"{name:56} {shown:>12}  {target}{mark}")
        if not ok:
            missed.append(name)
    bad = sum(v for k, v in f.items() if k.endswith("_non_2xx"))
    if bad:
        print(f"warning: {bad:.0f} non-2xx answers during the single-ID runs")
    print(
        f"(medians of interleaved rounds; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores: other work skews req/s and tails, far less CPU per request)"
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
